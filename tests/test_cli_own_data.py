"""The command line on own data (issue 12): the newcomer's `mydata/{train,test}` folders, a one-tile dataset, an
imbalanced folder, and every way a command used to give a silent wrong answer, lose data or end in a traceback.
Smoke mode (tiny model); each test reproduces its defect on the previous main."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

os.environ['DIS2_SMOKE'] = '1'
torch.set_num_threads(1)

from dis2.cli import main
from dis2.geotiff import read_raster, write_geotiff
from dis2.checkpoint import load_checkpoint
from test_own_data_layouts import make_tiles, STEMS

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')


def run(argv, capsys):
    "(exit status, stdout, stderr lines) of `dis2 argv`."
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, [l for l in err.splitlines() if l.strip()]


def fails(argv, capsys, *names, code=2):
    rc, out, err = run(argv, capsys)
    assert rc == code, err
    assert err and err[-1].startswith(f'dis2 {argv[0]}: ') and not any('Traceback' in l for l in err), err
    for n in names: assert str(n) in err[-1], (n, err)
    return err[-1]


@pytest.fixture(scope='module')
def mydata(tmp_path_factory):
    "A newcomer's folders: mydata/train (5 tiles) and mydata/test (3 tiles), no manifest."
    root = tmp_path_factory.mktemp('newcomer') / 'mydata'
    make_tiles(root / 'train', STEMS[:5]); make_tiles(root / 'test', STEMS[5:], seed=1)
    return root


@pytest.fixture(scope='module')
def run_dir(mydata, tmp_path_factory):
    out = tmp_path_factory.mktemp('runs') / 'run'
    assert main(['train', '--data', str(mydata / 'train'), '--out', str(out), '--config', 'fusion']) == 0
    return out


# -- the newcomer's path -------------------------------------------------------------------------------------
def test_train_folder_uses_every_tile_and_test_folder_is_scored_whole(mydata, run_dir, tmp_path, capsys):
    "Before: ~70 % of the training tiles, ~15 % of the test tiles (or `split 'test' has no tile`)."
    rc, out, err = run(['train', '--data', mydata / 'train', '--out', tmp_path / 'r', '--config', 'fusion'], capsys)
    assert rc == 0, err
    assert any("split 'train': all 5 tile(s)" in l for l in err) and any("split 'val'" in l and 'carved' in l for l in err), err
    summary = json.loads(out.strip().splitlines()[-1])
    assert Path(summary['checkpoint']).is_file()
    rc, out, err = run(['evaluate', '--checkpoint', run_dir, '--data', mydata / 'test', '--out', tmp_path / 'ev'], capsys)
    assert rc == 0, err
    assert any("split 'test': all 3 tile(s)" in l for l in err), err
    assert any(l.startswith(f'dis2 evaluate: checkpoint {run_dir}') and 'epoch' in l for l in err), err   # which one it read
    rc, out, err = run(['evaluate', '--checkpoint', run_dir / 'last.pt', '--data', mydata, '--out', tmp_path / 'ev2'], capsys)
    assert rc == 0 and any("split 'test': all 3 tile(s)" in l for l in err), err                          # DIR/{train,test}


def test_one_tile_dataset_trains(tmp_path, capsys):
    "Before: split 'val' has no tile (1 tile(s) in all)."
    root = make_tiles(tmp_path / 'one', ['scene'], size=96)
    rc, out, err = run(['train', '--data', root, '--out', tmp_path / 'r', '--config', 'fusion'], capsys)
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])['best'] is not None       # it validated on the carved strip


def _majority_miou(root):
    ys = np.concatenate([read_raster(p)[0].ravel() for p in sorted((root / 'label').glob('*.tif'))])
    return 100 * (ys == 0).mean() / 2                                           # IoU of class 0, IoU 0 for class 1


def test_imbalanced_folder_beats_the_majority_class(tmp_path, capsys):
    "Before: the minority class on every pixel (mIoU 3.2), far below predicting the majority class."
    root = tmp_path / 'imb'
    make_tiles(root / 'train', [f't{i}' for i in range(6)], minority=0.05, seed=3)
    make_tiles(root / 'test', ['u0', 'u1'], minority=0.05, seed=4)
    rc, out, err = run(['train', '--data', root, '--out', tmp_path / 'r', '--config', 'fusion', '--min-steps', '80'], capsys)
    assert rc == 0, err
    rc, out, err = run(['evaluate', '--checkpoint', tmp_path / 'r', '--data', root, '--scenarios', 'full',
                        '--out', tmp_path / 'ev'], capsys)
    assert rc == 0, err
    miou = pd.read_csv(next((tmp_path / 'ev').glob('*.csv'))).mIoU.iloc[0]
    base = _majority_miou(root / 'test')
    print(f'imbalanced folder: mIoU {miou:.1f} vs majority-class baseline {base:.1f}')
    assert miou > base + 5, (miou, base)


# -- silent wrong answers and lost data ----------------------------------------------------------------------
def test_predict_refuses_to_overwrite_its_input(mydata, run_dir, tmp_path, capsys):
    "Before: `--out x.tif` with `--input m=x.tif` replaced the image by its label map (exit 0)."
    x = tmp_path / 'scene.tif'; x.write_bytes((mydata / 'test' / 'optical' / f'{STEMS[5]}.tif').read_bytes())
    before = x.read_bytes()
    fails(['predict', '--checkpoint', run_dir, '--input', f'optical={x}', '--out', x], capsys, x, 'overwrite the input')
    fails(['predict', '--checkpoint', run_dir, '--input', f'optical={x}', '--out', tmp_path / 'l.tif', '--probs', tmp_path / 'l.tif'],
          capsys, 'same file')
    assert x.read_bytes() == before and not (tmp_path / 'l.tif').exists()


def test_second_train_into_a_busy_run_folder_is_refused(mydata, tmp_path, capsys):
    "Before: both runs exited 0 and config.json described neither checkpoint."
    out = tmp_path / 'busy'
    holder = subprocess.Popen([sys.executable, '-c', f"import time\nfrom dis2.core import run_lock\nwith run_lock({str(out)!r}, 'test holder'):"
                               "\n    print('held', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        fails(['train', '--data', mydata / 'train', '--out', out], capsys, out, 'in use by test holder')
    finally: holder.kill(); holder.wait()
    assert not (out / 'config.json').exists() and not (out / 'last.pt').exists()


def test_float32_max_pixel_keeps_the_checkpoint_statistics_sane(tmp_path, capsys):
    "Before: mean 1.2e34, std 1.9e36 saved in the checkpoint."
    root = make_tiles(tmp_path / 'd', STEMS[:3])
    p = root / 'sar' / f'{STEMS[1]}.tif'
    x, m = read_raster(p); x[0, 3, 3] = np.finfo(np.float32).max
    write_geotiff(p, x, crs=m.crs, transform=m.transform)
    rc, out, err = run(['train', '--data', root, '--out', tmp_path / 'r', '--config', 'fusion'], capsys)
    assert rc == 0, err
    sar = next(s for s in load_checkpoint(tmp_path / 'r' / 'last.pt').modalities if s.name == 'sar')
    assert abs(sar.mean[0]) < 10 and 0.1 < sar.std[0] < 10, (sar.mean, sar.std)


def test_dataset_without_labels_is_refused(tmp_path, capsys):
    "Before: trained 'successfully' with zero losses and printed val_mIoU NaN."
    root = make_tiles(tmp_path / 'd', STEMS[:3])
    for f in (root / 'label').iterdir(): f.unlink()
    (root / 'label').rmdir()
    (root / 'dis2.json').write_text(json.dumps({'classes': {'names': ['a', 'b', 'c']}}))
    fails(['train', '--data', root, '--out', tmp_path / 'r'], capsys, root, 'no label file')


def test_train_summary_is_valid_json_without_nan(tmp_path, capsys):
    "Before: `\"val_mIoU\": NaN` — not JSON."
    root = make_tiles(tmp_path / 'd', STEMS[:3])
    p = root / 'label' / f'{STEMS[2]}.tif'
    y, m = read_raster(p); write_geotiff(p, np.full_like(y, 255), crs=m.crs, transform=m.transform)   # val tile: nothing labelled
    (root / 'dis2.json').write_text(json.dumps({'classes': {'names': ['a', 'b', 'c']},
                                                'splits': {'train': STEMS[:2], 'val': STEMS[2:3]}}))
    rc, out, err = run(['train', '--data', root, '--out', tmp_path / 'r', '--config', 'fusion'], capsys)
    assert rc == 0, err
    def no_nan(c): raise ValueError(c)
    d = json.loads(out.strip().splitlines()[-1], parse_constant=no_nan)
    assert d['history'][-1]['val_mIoU'] is None


def test_predict_refuses_an_enormous_header_before_starting(run_dir, tmp_path, capsys):
    "Before: a multi-hour job on a file whose header claims 100000² pixels (which train refuses)."
    huge = tmp_path / 'huge.tif'
    with rasterio.open(huge, 'w', driver='GTiff', width=100_000, height=100_000, count=3, dtype='uint8', tiled=True,
                       sparse_ok=True, crs='EPSG:32632', transform=(0.5, 0, 500000, 0, -0.5, 5400000)) as d: pass
    t = time.time()
    fails(['predict', '--checkpoint', run_dir, '--input', f'optical={huge}', '--out', tmp_path / 'l.tif'], capsys, huge, '100000x100000')
    assert time.time() - t < 30


def test_evaluate_refuses_a_checkpoint_with_other_classes(mydata, run_dir, tmp_path, capsys):
    "Before: scored silently with the checkpoint's classes."
    root = tmp_path / 'named'
    make_tiles(root, STEMS[:2])
    (root / 'dis2.json').write_text(json.dumps({'classes': {'names': ['water', 'land', 'cloud']}}))
    fails(['evaluate', '--checkpoint', run_dir, '--data', root, '--split', 'all', '--out', tmp_path / 'ev'], capsys,
          'dis2.json', "differ from the manifest's ['water', 'land', 'cloud']")
    assert not (tmp_path / 'ev').exists()


# -- tracebacks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('flag,value', [('--batch-size', '0'), ('--lr', 'nan'), ('--epochs', '0'), ('--lr', '-1')])
def test_bad_numbers_are_one_line(mydata, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e: main(['train', '--data', str(mydata), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith('dis2 train: error: argument ' + flag), err


def test_predict_out_that_is_a_folder_fails_before_predicting(mydata, run_dir, tmp_path, capsys, monkeypatch):
    "Before: a traceback, after the whole prediction had run."
    import dis2.predict
    monkeypatch.setattr(dis2.predict, '_infer', lambda *a, **k: pytest.fail('predicted before checking the output'))
    fails(['predict', '--checkpoint', run_dir, '--input', f'optical={mydata / "test/optical" / (STEMS[5] + ".tif")}',
           '--out', tmp_path], capsys, tmp_path, 'is a folder')


READONLY = Path('/sys/fs')     # writes fail even for root


@pytest.mark.skipif(not READONLY.is_dir() or os.access(READONLY, os.W_OK) and os.getuid() != 0, reason='no read-only folder')
def test_read_only_output_folders_are_one_line(mydata, run_dir, capsys):
    "Before: tracebacks from predict and train."
    fails(['predict', '--checkpoint', run_dir, '--input', f'optical={mydata / "test/optical" / (STEMS[5] + ".tif")}',
           '--out', READONLY / 'l.tif'], capsys, READONLY / 'l.tif', 'not writable')
    fails(['train', '--data', mydata / 'train', '--out', READONLY / 'run', '--config', 'fusion'], capsys, READONLY / 'run')


def test_ctrl_c_is_one_line(mydata, tmp_path, capsys, monkeypatch):
    import dis2.train
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(dis2.train, 'train', interrupted)
    fails(['train', '--data', mydata / 'train', '--out', tmp_path / 'r'], capsys, 'interrupted', code=130)


def test_killed_prediction_leaves_temp_files_that_the_next_one_removes(mydata, run_dir, tmp_path):
    "Before: the temp files of a `kill -9`-ed prediction stayed forever."
    big = tmp_path / 'big.tif'
    src = read_raster(mydata / 'test' / 'optical' / f'{STEMS[5]}.tif')[0]
    write_geotiff(big, np.tile(src, (1, 8, 8)), crs='EPSG:32632', transform=(0.5, 0, 500000, 0, -0.5, 5400000))  # 512²
    out = tmp_path / 'o' / 'lab.tif'; out.parent.mkdir()
    cmd = [sys.executable, '-m', 'dis2.cli', 'predict', '--checkpoint', str(run_dir), '--input', f'optical={big}',
           '--out', str(out), '--window', '32', '--batch-size', '1']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.time()
    while not list(out.parent.glob('.lab.tif.*.tmp')) and p.poll() is None and time.time() - t < 60: time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    assert list(out.parent.glob('.lab.tif.*.tmp')), 'the prediction finished before it could be killed'
    r = subprocess.run(cmd[:-4] + ['--window', '512'], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(f.name for f in out.parent.iterdir()) == ['lab.tif'] and 'removed' in r.stderr


# -- runs: afresh, extended, corrupt, malicious ----------------------------------------------------------------
def test_no_resume_sets_the_old_best_aside_and_more_epochs_extend(mydata, tmp_path, capsys):
    "Before: --no-resume silently overwrote best.pt; a finished run could not be extended with more epochs."
    out = tmp_path / 'r'
    assert run(['train', '--data', mydata / 'train', '--out', out, '--config', 'fusion'], capsys)[0] == 0
    best = (out / 'best.pt').read_bytes()
    rc, o, err = run(['train', '--data', mydata / 'train', '--out', out, '--config', 'fusion', '--epochs', '3'], capsys)
    assert rc == 0, err
    assert json.loads(o.strip().splitlines()[-1])['epochs'] == 3 and load_checkpoint(out / 'last.pt').epoch == 3
    rc, o, err = run(['train', '--data', mydata / 'train', '--out', out, '--config', 'fusion', '--no-resume'], capsys)
    assert rc == 0, err
    aside = [p for p in out.iterdir() if p.name.startswith('replaced-')]
    assert len(aside) == 1 and (aside[0] / 'best.pt').is_file() and any('moved to' in l for l in err), err


def test_corrupt_last_checkpoint_hints_no_resume(mydata, tmp_path, capsys):
    out = tmp_path / 'r'; out.mkdir(); (out / 'last.pt').write_bytes(b'garbage')
    fails(['train', '--data', mydata / 'train', '--out', out], capsys, out / 'last.pt', '--no-resume')


def test_malicious_checkpoint_is_refused_without_pytorch_advice(mydata, tmp_path, capsys):
    "Before: the refusal ended in PyTorch's advice to turn weights_only off."
    class Evil:
        def __reduce__(self): return (os.system, (f"touch {tmp_path / 'pwned'}",))
    torch.save({'x': Evil()}, tmp_path / 'evil.pt')
    line = fails(['evaluate', '--checkpoint', tmp_path / 'evil.pt', '--data', mydata / 'test'], capsys, tmp_path / 'evil.pt', 'refused')
    assert 'weights_only' not in line and not (tmp_path / 'pwned').exists()
