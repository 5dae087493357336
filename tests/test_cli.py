"""End-to-end checks of the `dis2` command line in smoke mode: the researcher's path from nothing to a
trained model, a results table, figures and a georeferenced prediction."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import rasterio

from dis2.cli import main

os.environ['DIS2_SMOKE'] = '1'


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp('demo')
    rc = main(['demo', '--smoke', '--data', str(d / 'embedded'), '--results', str(d / 'results'),
               '--figures', str(d / 'figures'), '--runs', str(d / 'runs')])
    assert rc == 0
    return d


def test_demo_writes_table_and_figures(demo):
    df = pd.read_csv(demo / 'results' / 'demo.csv')
    assert list(df.columns[:5]) == ['method', 'scenario', 'mIoU', 'mF1', 'OA']
    assert {'IoU_building', 'F1_car'} <= set(df.columns)
    assert set(df.method) == {'unimodal_optical', 'unimodal_ndsm', 'fusion', 'dis2'}
    assert set(df[df.method == 'dis2'].scenario) == {'full', 'missing_optical', 'missing_ndsm'}
    assert df[['mIoU', 'mF1', 'OA']].notna().all().all()
    assert (demo / 'results' / 'demo.md').read_text().count('|') > 10
    pngs = list((demo / 'figures').glob('*.png'))
    assert len(pngs) >= 3 and all(p.stat().st_size > 1000 for p in pngs)


def test_demo_rerun_leaves_outputs_byte_identical(demo):
    "`make demo` twice → `git status` clean: a resumed rerun rewrites results/ and figures/ with the same bytes; timings go to runs/."
    files = lambda: {p.relative_to(demo): p.read_bytes() for d in ('results', 'figures') for p in sorted((demo / d).rglob('*')) if p.is_file()}
    before = files()
    assert 'seconds' not in json.loads((demo / 'results' / 'demo.json').read_text())
    rc = main(['demo', '--smoke', '--data', str(demo / 'embedded'), '--results', str(demo / 'results'),
               '--figures', str(demo / 'figures'), '--runs', str(demo / 'runs')])
    assert rc == 0
    after = files()
    assert sorted(after) == sorted(before)
    assert [str(k) for k in before if before[k] != after[k]] == []
    log = [json.loads(l) for l in (demo / 'runs' / 'demo' / 'timings.jsonl').read_text().splitlines()]
    assert len(log) == 2 and all(r['results'] == 'demo.json' and r['seconds'] >= 0 for r in log)


def test_train_evaluate_predict_roundtrip(demo, tmp_path, capsys):
    data = demo / 'embedded'
    assert main(['train', '--data', str(data), '--modalities', 'optical,ndsm', '--config', 'fusion',
                 '--out', str(tmp_path / 'run')]) == 0
    ck = tmp_path / 'run' / 'last.pt'
    assert ck.exists()
    assert main(['evaluate', '--checkpoint', str(ck), '--data', str(data), '--scenarios', 'all',
                 '--out', str(tmp_path / 'ev')]) == 0
    csvs = list((tmp_path / 'ev').glob('*.csv'))
    assert len(csvs) == 1 and len(pd.read_csv(csvs[0])) == 3
    tile = sorted((data / 'optical').glob('*.tif'))[0]
    out = tmp_path / 'pred.tif'
    assert main(['predict', '--checkpoint', str(ck), '--input', f'optical={tile}', '--out', str(out)]) == 0
    with rasterio.open(out) as o, rasterio.open(tile) as i:
        assert o.crs == i.crs and o.transform == i.transform and o.shape == i.shape
        assert o.colormap(1)


def test_bad_input_is_one_clear_line(demo, tmp_path, capsys):
    data = demo / 'embedded'
    assert main(['train', '--data', str(data), '--modalities', 'optical,sar', '--out', str(tmp_path / 'r')]) == 2
    err = capsys.readouterr().err
    assert 'sar' in err and 'error' in err
    bad = tmp_path / 'bad.pt'; bad.write_bytes(b'not a checkpoint')
    assert main(['evaluate', '--checkpoint', str(bad), '--data', str(data)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_bench_prints_one_json_line():
    exe = shutil.which('dis2') or str(Path(sys.executable).parent / 'dis2')
    r = subprocess.run([exe, 'bench', '--config', 'dis2', '--batch', '1', '--size', '64', '--threads', '1',
                        '--steps', '1', '--warmup', '0', '--predict-size', '256'],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'DIS2_SMOKE': '1'})
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == 1
    d = json.loads(lines[0])
    for k in ('params', 'train_step_s', 'infer_s', 'peak_rss_mb', 'predict_mp_s', 'predict_peak_rss_mb'):
        assert d[k] > 0, k
