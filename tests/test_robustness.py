"""Bad input through the readers, training, prediction and the command line.

Every test corrupts a copy of a tiny embedded benchmark (4/2/2 tiles of 64x64, `dis2.synthetic.smoke_config`)
and checks that dis2 either copes (NaN/inf/nodata become finite inputs, invalid files become missing modalities
on request) or stops with a `dis2.core` error naming the file."""
import os, shutil, struct, warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

os.environ['DIS2_SMOKE'] = '1'
torch.set_num_threads(1)

import dis2.core
from dis2.core import CheckpointError, ConfigError, DataError, atomic_torch_save
from dis2.data import open_dataset
from dis2.geotiff import raster_meta, read_raster, write_geotiff
from dis2.evaluate import write_results
from dis2.synthetic import build_embedded, smoke_config
from dis2.methods import get_config
from dis2.train import open_run_datasets, train
from dis2.checkpoint import load_checkpoint
from dis2.cli import main
import dis2.predict
from dis2.predict import predict_geotiff

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::rasterio.errors.NotGeoreferencedWarning')

TRAIN_TILE, VAL_TILE = 'tile_001', 'tile_004'    # smoke_config splits: train tile_000-003, val 004-005, test 006-007


# -- fixtures and helpers ------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def base(tmp_path_factory):
    "A pristine tiny benchmark, never modified."
    return build_embedded(tmp_path_factory.mktemp('base') / 'embedded', smoke_config(), progress=False)


@pytest.fixture
def root(base, tmp_path):
    "A private copy of the benchmark for a test to corrupt."
    return Path(shutil.copytree(base, tmp_path / 'data'))


@pytest.fixture(scope='module')
def checkpoint(base, tmp_path_factory):
    "A smoke-trained DIS2 checkpoint on the benchmark (optical uint8 3 bands, ndsm float32 1 band; spec nodata None)."
    cfg = get_config('dis2', smoke=True)
    tr, _ = open_run_datasets(cfg, base, val=False)
    return train(cfg, tr, None, out_dir=tmp_path_factory.mktemp('run'), resume=False, progress=False).checkpoint


def tif(root, modality, stem=TRAIN_TILE) -> Path: return Path(root) / modality / f'{stem}.tif'


def rewrite(path, fn=None, **profile):
    "Rewrite the GeoTIFF `path` with plain rasterio: array `fn(a)` (default unchanged) and `profile` changes."
    with rasterio.open(path) as src: a, prof = src.read(), src.profile
    a = a if fn is None else fn(a)
    prof.update(count=a.shape[0], height=a.shape[1], width=a.shape[2], dtype=str(a.dtype), **profile)
    for k in ('blockxsize', 'blockysize', 'tiled'): prof.pop(k, None)
    os.unlink(path)
    with rasterio.open(path, 'w', **prof) as dst: dst.write(a)
    return path


def sample_of(ds, stem):
    "The full-tile sample `stem` of dataset `ds`."
    return next(s for s in ds.tiles() if s['id'] == stem)


def no_temp_files(folder) -> bool:
    return not [p for p in Path(folder).rglob('*') if p.name.endswith('.tmp') or p.name.startswith('.')]


def cli_fails(argv, capsys, *names):
    "`main(argv)` returns 2; stderr ends with exactly one line `dis2 <cmd>: error: ...` containing every `names` (notices before it, no traceback)."
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = [l for l in capsys.readouterr().err.strip().splitlines() if l.strip()]
    assert rc == 2, err
    errors = [l for l in err if l.startswith(f'dis2 {argv[0]}: error: ')]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any('Traceback' in l for l in err), err
    for n in names: assert str(n) in err[-1], (n, err)
    return err[-1]


# -- readers: values ----------------------------------------------------------------------------------------
def _nan_inf(a):
    a = a.copy(); a[:, :10] = np.nan; a[:, 10:20, :5] = np.inf; a[:, 20:25, :5] = -np.inf
    return a


def test_nan_inf_pixels_become_finite_and_sample_is_usable(root):
    rewrite(tif(root, 'ndsm'), _nan_inf)
    ds = open_dataset(root, 'train')
    s = sample_of(ds, TRAIN_TILE)
    x = s['inputs']['ndsm']
    assert torch.isfinite(x).all() and s['avail'].all()
    assert (x[:, :10] == 0).all() and (x[:, 10:25, :5] == 0).all()      # invalid pixels at the mean
    assert x[:, 30:].abs().sum() > 0                                     # valid ones untouched
    for i in range(len(ds)): assert all(torch.isfinite(v).all() for v in ds[i]['inputs'].values())


def test_nodata_declared_in_the_file_is_honoured(root):
    rewrite(tif(root, 'ndsm'), lambda a: np.where(np.arange(64)[:, None] < 16, np.float32(-9999), a), nodata=-9999)
    x = sample_of(open_dataset(root, 'train'), TRAIN_TILE)['inputs']['ndsm']
    assert (x[:, :16] == 0).all() and x.abs().max() < 100


@pytest.mark.parametrize('kind', ['nan', 'nodata'])
def test_all_invalid_modality_is_an_error_naming_the_file(root, kind):
    p = tif(root, 'ndsm')
    if kind == 'nan': rewrite(p, lambda a: np.full_like(a, np.nan))
    else: rewrite(p, lambda a: np.full_like(a, -9999), nodata=-9999)
    with pytest.raises(DataError, match='NaN/nodata') as e: open_dataset(root, 'train')
    assert str(p) in str(e.value)


@pytest.mark.parametrize('kind', ['nan', 'nodata'])
def test_all_invalid_modality_is_missing_on_request_and_reported(root, kind):
    p = tif(root, 'ndsm')
    if kind == 'nan': rewrite(p, lambda a: np.full_like(a, np.nan))
    else: rewrite(p, lambda a: np.full_like(a, -9999), nodata=-9999)
    ds = open_dataset(root, 'train', on_invalid='missing')
    assert any(str(p) in r for r in ds.report)
    s = sample_of(ds, TRAIN_TILE)
    assert s['avail'].tolist() == [True, False] and (s['inputs']['ndsm'] == 0).all()
    assert len(ds.records) == 4


def test_sample_without_any_modality_is_named(root):
    for m in ('optical', 'ndsm'): tif(root, m).unlink()
    with pytest.raises(DataError, match=TRAIN_TILE): open_dataset(root, 'train')
    ds = open_dataset(root, 'train', on_invalid='missing')
    assert TRAIN_TILE not in ds.ids and len(ds.ids) == 3
    assert any(TRAIN_TILE in r and 'excluded' in r for r in ds.report)


def test_sample_whose_only_modality_is_all_nan_is_excluded_on_request(root):
    tif(root, 'optical').unlink(); rewrite(tif(root, 'ndsm'), lambda a: np.full_like(a, np.nan))
    ds = open_dataset(root, 'train', on_invalid='missing')
    assert TRAIN_TILE not in ds.ids and sum(TRAIN_TILE in r for r in ds.report) == 2


# -- readers: dtypes and label values ------------------------------------------------------------------------
def test_label_with_fractional_values_is_refused(root):
    p = tif(root, 'label')
    rewrite(p, lambda a: a.astype(np.float32) + 0.5)
    with pytest.raises(DataError) as e: open_dataset(root, 'train')
    assert str(p) in str(e.value)


def test_integer_valued_float_and_uint16_labels_are_safely_converted(root, base):
    ref = sample_of(open_dataset(base, 'train'), TRAIN_TILE)['label']
    rewrite(tif(root, 'label'), lambda a: a.astype(np.float32), photometric='minisblack')
    rewrite(tif(root, 'label', 'tile_002'), lambda a: a.astype(np.uint16), photometric='minisblack')
    ds = open_dataset(root, 'train')
    assert torch.equal(sample_of(ds, TRAIN_TILE)['label'], ref)
    assert sample_of(ds, 'tile_002')['label'].dtype == torch.int64


def test_uint16_optical_where_uint8_declared_is_safely_converted(root, base):
    "Documented safe conversion: any real dtype is read as float32 and standardised with the spec's statistics."
    rewrite(tif(root, 'optical'), lambda a: a.astype(np.uint16), photometric='minisblack')
    a = sample_of(open_dataset(base, 'train'), TRAIN_TILE)['inputs']['optical']
    b = sample_of(open_dataset(root, 'train'), TRAIN_TILE)['inputs']['optical']
    assert torch.allclose(a, b)


def test_complex_modality_is_refused_naming_the_file(root):
    p = rewrite(tif(root, 'ndsm'), lambda a: (a + 1j * a).astype(np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter('error', np.exceptions.ComplexWarning)
        with pytest.raises(DataError) as e: sample_of(open_dataset(root, 'train'), TRAIN_TILE)
    assert str(p) in str(e.value)


@pytest.mark.parametrize('value', [6, 254])
def test_label_values_outside_the_classes_are_named(root, value):
    p = tif(root, 'label')
    rewrite(p, lambda a: np.where(np.arange(64)[:, None] < 3, np.uint8(value), a))
    with pytest.raises(DataError, match=f'label values .*{value}') as e: open_dataset(root, 'train')
    assert str(p) in str(e.value)


# -- readers: structure --------------------------------------------------------------------------------------
CORRUPTIONS = {
    'bands': ('optical', lambda p: rewrite(p, lambda a: np.concatenate([a, a[:1]])), 'band'),
    'crs': ('ndsm', lambda p: rewrite(p, crs='EPSG:32633'), 'CRS'),
    'transform': ('ndsm', lambda p: rewrite(p, transform=rasterio.Affine(0.5, 0, 496005., 0, -0.5, 5420000.)), 'transform'),
    'size': ('ndsm', lambda p: rewrite(p, lambda a: a[:, :48, :48].copy()), 'size'),
    'label_size': ('label', lambda p: rewrite(p, lambda a: a[:, :32].copy()), 'size'),
    'not_tiff': ('ndsm', lambda p: p.write_text('this is not a GeoTIFF\n' * 50), 'not a readable raster'),
    'empty': ('optical', lambda p: p.write_bytes(b''), 'not a readable raster'),
}


@pytest.mark.parametrize('case', list(CORRUPTIONS))
def test_structural_problems_are_named(root, case):
    mod, corrupt, what = CORRUPTIONS[case]
    p = tif(root, mod); corrupt(p)
    with pytest.raises(DataError, match=what) as e: open_dataset(root, 'train')
    assert str(p) in str(e.value)


def truncate(p: Path) -> Path:
    b = p.read_bytes(); p.write_bytes(b[:len(b) // 2]); return p


@pytest.mark.parametrize('mod', ['optical', 'ndsm', 'label'])
def test_truncated_geotiff_is_named(root, mod):
    p = truncate(tif(root, mod))
    with pytest.raises(DataError) as e:
        ds = open_dataset(root, 'train', patch=32)
        for i in range(len(ds)): ds[i]
    assert str(p) in str(e.value)


def test_truncated_uncompressed_geotiff_read_is_refused(tmp_path):
    p = tmp_path / 'x.tif'
    write_geotiff(p, np.random.default_rng(0).uniform(1, 2, (1, 512, 512)).astype(np.float32))
    p = truncate(rewrite(p, compress=None))
    with pytest.raises(DataError) as e: read_raster(p)
    assert str(p) in str(e.value)


def _huge(p: Path, side=1_000_000, dtype='uint8', count=1) -> Path:
    "A 402-byte GeoTIFF whose header claims `side` x `side` pixels: a 16x16 one-strip file with patched size tags."
    if p.exists(): p.unlink()
    with rasterio.open(p, 'w', driver='GTiff', width=16, height=16, count=count, dtype=dtype, blockysize=16) as d:
        d.write(np.ones((count, 16, 16), dtype))
    b = bytearray(p.read_bytes())
    assert b[:4] == b'II*\x00'                                          # classic little-endian TIFF
    ifd = struct.unpack_from('<I', b, 4)[0]
    for i in range(struct.unpack_from('<H', b, ifd)[0]):
        e = ifd + 2 + 12 * i
        tag = struct.unpack_from('<H', b, e)[0]
        if tag in (256, 257, 278): struct.pack_into('<HHII', b, e, tag, 4, 1, side)   # ImageWidth, ImageLength, RowsPerStrip
    p.write_bytes(bytes(b))
    return p


@pytest.mark.parametrize('dtype', ['uint8', 'float32'])
def test_enormous_header_is_refused_before_allocating(tmp_path, dtype):
    p = _huge(tmp_path / 'huge.tif', dtype=dtype)
    assert raster_meta(p).width == 1_000_000 and p.stat().st_size < 4096
    with pytest.raises(DataError, match='max_pixels') as e: read_raster(p)
    assert str(p) in str(e.value)
    with pytest.raises(DataError) as e: read_raster(p, window=(0, 0, 8, 8))     # the data is not there: named, no crash
    assert str(p) in str(e.value)


@pytest.mark.parametrize('mod', ['ndsm', 'label'])
def test_enormous_header_in_a_dataset_is_named(root, mod):
    p = _huge(tif(root, mod), dtype='float32')
    with pytest.raises(DataError) as e: open_dataset(root, 'train')
    assert str(p) in str(e.value)


_HUGE_TILE_SCRIPT = """
import resource, sys, warnings; warnings.simplefilter('ignore')
from dis2.core import DataError
from dis2.data import open_dataset
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
try: ds = open_dataset(sys.argv[1], 'train', patch=32)
except DataError as e: print('DataError', e)
except MemoryError: print('MemoryError')
else: print('opened', len(ds))
"""


def test_enormous_uint8_tile_in_a_dataset_is_refused(root):
    "Run in a child process under a 2 GiB address-space limit, so the failure cannot take the machine's memory."
    import subprocess, sys
    tif(root, 'ndsm').unlink()
    opt, lab = _huge(tif(root, 'optical'), count=3), _huge(tif(root, 'label'))
    r = subprocess.run([sys.executable, '-c', _HUGE_TILE_SCRIPT, str(root)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    out = r.stdout.strip()
    assert out.startswith('DataError') and (str(opt) in out or str(lab) in out), (out, r.stderr[-500:])


def test_unknown_modality_is_a_config_error(root):
    with pytest.raises(ConfigError, match='sar'): open_dataset(root, 'train', modalities=['optical', 'sar'])
    with pytest.raises(ConfigError, match='sar'): open_dataset(root, 'train', modalities='optical,sar')


# -- training ------------------------------------------------------------------------------------------------
def _finite_state(path) -> bool:
    ck = load_checkpoint(path)
    return all(torch.isfinite(v).all() for v in ck.model.values() if v.is_floating_point())


def test_training_with_nan_inputs_stays_finite(root, tmp_path):
    for stem in ('tile_000', 'tile_001', 'tile_002', 'tile_003'): rewrite(tif(root, 'ndsm', stem), _nan_inf)
    cfg = get_config('dis2', smoke=True)
    tr, va = open_run_datasets(cfg, root)
    res = train(cfg, tr, va, out_dir=tmp_path / 'run', resume=False, progress=False)
    ep = [h for h in res.history if h['kind'] == 'epoch'][-1]
    assert np.isfinite([v for k, v in ep.items() if isinstance(v, float)]).all() and 'total' in ep
    assert _finite_state(res.checkpoint)


def test_unknown_config_name():
    with pytest.raises(ConfigError, match='nope'): get_config('nope')


@pytest.mark.parametrize('garbage', [b'', b'not a checkpoint at all', 'truncated'])
def test_corrupt_last_checkpoint_stops_resume_and_is_kept(base, checkpoint, tmp_path, garbage):
    run = tmp_path / 'run'; run.mkdir()
    last = run / 'last.pt'
    last.write_bytes(checkpoint.read_bytes()[:checkpoint.stat().st_size // 2] if garbage == 'truncated' else garbage)
    before = last.read_bytes()
    cfg = get_config('dis2', smoke=True)
    tr, _ = open_run_datasets(cfg, base, val=False)
    with pytest.raises(CheckpointError) as e: train(cfg, tr, None, out_dir=run, resume=True, progress=False)
    assert str(last) in str(e.value)
    assert last.read_bytes() == before                                  # nothing lost, nothing overwritten


# -- predict -------------------------------------------------------------------------------------------------
def _pred(checkpoint, inputs, out, **kw):
    return predict_geotiff(checkpoint, inputs, out, window=32, overlap=0.25, progress=False, **kw)


def test_predict_nan_inf_inputs_give_finite_outputs(root, checkpoint, tmp_path):
    n = rewrite(tif(root, 'ndsm'), _nan_inf)
    s = _pred(checkpoint, {'optical': tif(root, 'optical'), 'ndsm': n}, tmp_path / 'o' / 'lab.tif',
              probs_out=tmp_path / 'o' / 'p.tif', probs_dtype='float32')
    assert np.isfinite(rasterio.open(s.probs_path).read()).all()
    assert (rasterio.open(s.path).read(1) < 6).all()                     # optical is valid everywhere: every pixel labelled


def test_predict_all_nan_input_gives_255(root, checkpoint, tmp_path):
    n = rewrite(tif(root, 'ndsm'), lambda a: np.full_like(a, np.nan))
    s = _pred(checkpoint, {'ndsm': n}, tmp_path / 'lab.tif', probs_out=tmp_path / 'p.tif', probs_dtype='float32')
    assert (rasterio.open(s.path).read(1) == 255).all() and s.nodata_pixels == 64 * 64
    assert np.isfinite(rasterio.open(s.probs_path).read()).all()


def test_predict_nodata_declared_in_the_file_gives_255(root, checkpoint, tmp_path):
    o = rewrite(tif(root, 'optical'), lambda a: np.zeros_like(a), nodata=0)
    n = rewrite(tif(root, 'ndsm'), lambda a: np.full_like(a, -9999), nodata=-9999)
    s = _pred(checkpoint, {'optical': o, 'ndsm': n}, tmp_path / 'lab.tif')
    assert (rasterio.open(s.path).read(1) == 255).all()


@pytest.mark.parametrize('case', ['bands', 'crs', 'transform', 'size', 'not_tiff'])
def test_predict_refuses_bad_inputs_naming_the_file(root, checkpoint, tmp_path, case):
    mod, corrupt, what = CORRUPTIONS[case]
    p = tif(root, mod); corrupt(p)
    out = tmp_path / 'o'
    with pytest.raises(DataError, match=what) as e:
        _pred(checkpoint, {'optical': tif(root, 'optical'), 'ndsm': tif(root, 'ndsm')}, out / 'lab.tif')
    assert str(p) in str(e.value)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize('existing', [False, True])
def test_predict_failure_midway_keeps_folder_clean(base, checkpoint, tmp_path, monkeypatch, existing):
    out = tmp_path / 'o'; out.mkdir()
    lab, probs = out / 'lab.tif', out / 'p.tif'
    inputs = {'optical': tif(base, 'optical'), 'ndsm': tif(base, 'ndsm')}
    if existing: _pred(checkpoint, inputs, lab, probs_out=probs)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = dis2.predict._infer, []
    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 3: raise RuntimeError('boom')
        return real(*a, **k)
    monkeypatch.setattr(dis2.predict, '_infer', failing)
    with pytest.raises(RuntimeError, match='boom'): _pred(checkpoint, inputs, lab, probs_out=probs, batch_size=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before     # old files intact, no new or temp file
    if existing: assert rasterio.open(lab).read(1).shape == (64, 64)


# -- atomic writes -------------------------------------------------------------------------------------------
class Boom(Exception): pass


def test_checkpoint_write_failure_keeps_old_file(checkpoint, tmp_path, monkeypatch):
    dst = tmp_path / 'last.pt'; shutil.copy(checkpoint, dst); before = dst.read_bytes()
    def half_save(obj, f, *a, **k):
        Path(f).write_bytes(before[:100]); raise Boom
    monkeypatch.setattr(dis2.core.torch, 'save', half_save)
    with pytest.raises(Boom): atomic_torch_save({'x': 1}, dst)
    assert dst.read_bytes() == before and no_temp_files(tmp_path)


def test_results_write_failure_keeps_old_tables(tmp_path, monkeypatch):
    import pandas as pd
    df = pd.DataFrame({'method': ['a'], 'scenario': ['full'], 'mIoU': [1.0]})
    csv, md = write_results(df, tmp_path, 'r')
    before = {p: p.read_bytes() for p in (csv, md)}
    real = Path.write_text
    def half(self, text, *a, **k):
        real(self, text[:5]); raise Boom
    monkeypatch.setattr(Path, 'write_text', half)
    with pytest.raises(Boom): write_results(df.assign(mIoU=2.0), tmp_path, 'r')
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in (csv, md)} == before and no_temp_files(tmp_path)


def test_geotiff_write_failure_keeps_old_file(tmp_path):
    p = write_geotiff(tmp_path / 'g.tif', np.ones((1, 16, 16), np.uint8))
    before = p.read_bytes()
    class Bad:
        def __str__(self): raise Boom
    with pytest.raises(Boom): write_geotiff(p, np.zeros((1, 300, 300), np.uint8), tags={'k': Bad()})   # fails after the pixels
    assert p.read_bytes() == before and no_temp_files(tmp_path)


# -- command line --------------------------------------------------------------------------------------------
CLI_TRAIN_CASES = ['bands', 'crs', 'transform', 'size', 'label_size', 'not_tiff', 'empty', 'all_nan', 'all_nodata',
                   'label_values', 'truncated', 'huge', 'no_modality']


def _corrupt_for_cli(root, case) -> Path:
    if case in CORRUPTIONS:
        mod, corrupt, _ = CORRUPTIONS[case]; p = tif(root, mod); corrupt(p); return p
    if case == 'all_nan': return rewrite(tif(root, 'ndsm'), lambda a: np.full_like(a, np.nan))
    if case == 'all_nodata': return rewrite(tif(root, 'ndsm'), lambda a: np.full_like(a, -9999), nodata=-9999)
    if case == 'no_modality':
        for m in ('optical', 'ndsm'): tif(root, m).unlink()
        return TRAIN_TILE                                                # no file to name: the tile is named
    if case == 'label_values': return rewrite(tif(root, 'label'), lambda a: np.full_like(a, 9))
    if case == 'truncated': return truncate(tif(root, 'optical'))
    if case == 'huge': return _huge(tif(root, 'ndsm'), dtype='float32')
    raise KeyError(case)


@pytest.mark.parametrize('case', CLI_TRAIN_CASES)
def test_cli_train_bad_data_is_one_line_naming_the_file(root, tmp_path, capsys, case):
    p = _corrupt_for_cli(root, case)
    cli_fails(['train', '--data', root, '--out', tmp_path / 'run', '--no-resume'], capsys, p)


def test_cli_train_on_invalid_missing_trains(root, tmp_path, capsys):
    rewrite(tif(root, 'ndsm'), lambda a: np.full_like(a, np.nan))
    assert main(['train', '--data', str(root), '--out', str(tmp_path / 'run'), '--on-invalid', 'missing']) == 0
    assert _finite_state(tmp_path / 'run' / 'last.pt')


def test_cli_train_bad_validation_file_is_reported(root, tmp_path, capsys):
    p = tif(root, 'ndsm', VAL_TILE); p.write_text('not a tif')
    cli_fails(['train', '--data', root, '--out', tmp_path / 'run', '--no-resume'], capsys, p)


def test_cli_train_unknown_modality_and_config(root, tmp_path, capsys):
    cli_fails(['train', '--data', root, '--modalities', 'optical,sar', '--out', tmp_path / 'r'], capsys, 'sar')
    cli_fails(['train', '--data', root, '--config', 'nope', '--out', tmp_path / 'r'], capsys, 'nope')
    cli_fails(['train', '--data', tmp_path / 'nowhere', '--out', tmp_path / 'r'], capsys, tmp_path / 'nowhere')


def test_cli_train_corrupt_last_checkpoint(base, tmp_path, capsys):
    run = tmp_path / 'run'; run.mkdir(); (run / 'last.pt').write_bytes(b'garbage')
    cli_fails(['train', '--data', base, '--out', run], capsys, run / 'last.pt')
    assert (run / 'last.pt').read_bytes() == b'garbage'


@pytest.mark.parametrize('case', ['bands', 'crs', 'size', 'not_tiff', 'missing_file'])
def test_cli_predict_bad_input_is_one_line_naming_the_file(root, checkpoint, tmp_path, capsys, case):
    if case == 'missing_file': p = tmp_path / 'absent.tif'
    else: mod, corrupt, _ = CORRUPTIONS[case]; p = tif(root, mod); corrupt(p)
    out = tmp_path / 'o' / 'lab.tif'
    cli_fails(['predict', '--checkpoint', checkpoint, '--input', f'optical={tif(root, "optical") if case != "missing_file" else p}',
               '--input', f'ndsm={tif(root, "ndsm")}', '--out', out], capsys, p)
    assert not out.exists()


def test_cli_predict_unknown_modality_and_bad_checkpoint(base, checkpoint, tmp_path, capsys):
    cli_fails(['predict', '--checkpoint', checkpoint, '--input', f'sar={tif(base, "ndsm")}', '--out', tmp_path / 'l.tif'],
              capsys, 'sar')
    bad = tmp_path / 'bad.pt'; bad.write_bytes(b'\x00' * 64)
    cli_fails(['predict', '--checkpoint', bad, '--input', f'ndsm={tif(base, "ndsm")}', '--out', tmp_path / 'l.tif'], capsys, bad)


@pytest.mark.parametrize('case', ['all_nan', 'label_values', 'not_tiff'])
def test_cli_evaluate_bad_data_is_one_line_naming_the_file(root, checkpoint, tmp_path, capsys, case):
    test_tile = 'tile_006'
    if case == 'all_nan': p = rewrite(tif(root, 'ndsm', test_tile), lambda a: np.full_like(a, np.nan))
    elif case == 'label_values': p = rewrite(tif(root, 'label', test_tile), lambda a: np.full_like(a, 9))
    else: p = tif(root, 'optical', test_tile); p.write_text('nope')
    cli_fails(['evaluate', '--checkpoint', checkpoint, '--data', root, '--out', tmp_path / 'ev'], capsys, p)
    assert not (tmp_path / 'ev').exists() or not list((tmp_path / 'ev').iterdir())


def test_predict_refuses_a_forged_enormous_width_before_allocating(checkpoint, tmp_path):
    "A header claiming a 10^6-pixel-wide tile would need a huge band accumulator: refused, file named, nothing written."
    p = _huge(tmp_path / 'huge_ndsm.tif', dtype='float32')
    out = tmp_path / 'out' / 'pred.tif'
    with pytest.raises(DataError, match='band accumulator|more than a tile may have') as e:   # the tile bound comes first now
        predict_geotiff(checkpoint, {'ndsm': p}, out, window=512, progress=False)
    assert str(p) in str(e.value)
    assert not out.exists()
