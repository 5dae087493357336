"""A model trained on one area meets the next one (issue 14): normalisation modes, the input-shift warning,
test-time adaptation (AdaBN) on a copy, and the generator's shifted acquisitions. Every test runs in seconds."""
import hashlib, warnings
import numpy as np
import pytest
import torch
from rasterio.transform import from_origin

from dis2.core import from_dict
from dis2.modalities import ModalitySpec, ISPRS_CLASSES
from dis2.data import open_dataset
from dis2.geotiff import write_geotiff
from dis2.adapt import InputShiftWarning, adapt_norm_stats, check_input_stats
from dis2.predict import predict_geotiff
from dis2.city import SceneConfig
from dis2.scenes import SceneShift, BandShift, generate_scene
from dis2.synthetic import build_embedded, smoke_config, shifted_config

SPECS = [ModalitySpec('optical', ('nir', 'red', 'green'), mean=(100., 80., 80.), std=(40., 30., 30.)),
         ModalitySpec('ndsm', ('height',), mean=(4.,), std=(3.,))]
GEO = dict(crs='EPSG:32632', transform=from_origin(500000, 5400000, .5, .5))


def _tiny_model(seed=0):
    from dis2.methods import model_config, build_model_from_config, SIZES
    torch.manual_seed(seed)
    m = build_model_from_config(model_config('dis2', ('optical', 'ndsm'), (3, 1), 6, **SIZES['smoke']))
    m.train()
    with torch.no_grad():                                   # a few forwards give the norms training statistics
        for av in ([True, True], [True, False], [False, True]):
            m({'optical': torch.randn(4, 3, 32, 32), 'ndsm': torch.randn(4, 1, 32, 32)}, torch.tensor([av] * 4))
    return m.eval()


def _tiles(tmp_path, name, gain=1., offset=0.):
    g = np.random.default_rng(0)
    opt = np.stack([g.normal(m, s, (64, 64)) for m, s in zip(SPECS[0].mean, SPECS[0].std)]).astype(np.float32)
    ndsm = g.normal(4, 3, (1, 64, 64)).astype(np.float32) * gain + offset
    return {'optical': write_geotiff(tmp_path / f'{name}_opt.tif', opt, **GEO),
            'ndsm': write_geotiff(tmp_path / f'{name}_ndsm.tif', ndsm, **GEO)}


def test_predict_warns_on_a_shifted_tile(tmp_path):
    model = _tiny_model()
    calm, hot = _tiles(tmp_path, 'calm'), _tiles(tmp_path, 'hot', gain=2., offset=8.)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        predict_geotiff(model, calm, tmp_path / 'calm.tif', window=64, specs=SPECS, classes=ISPRS_CLASSES, progress=False)
    assert not [x for x in w if issubclass(x.category, InputShiftWarning)]
    with pytest.warns(InputShiftWarning, match=r'(?s)hot_ndsm\.tif: modality ndsm .*band height: mean .* \(\+\d\.\d std\).*--adapt'):
        predict_geotiff(model, hot, tmp_path / 'hot.tif', window=64, specs=SPECS, classes=ISPRS_CLASSES, progress=False)
    f = check_input_stats(hot, SPECS)
    assert [(x.modality, x.band) for x in f] == [('ndsm', 'height')] and 3.5 < f[0].z < 4.5 and 1.8 < f[0].ratio < 2.2


def test_tile_and_fixed_normalisation_exclude_invalid_pixels():
    x = np.array([[[1., 2., 3., 4., 5., np.nan, np.inf, -9999.]]], np.float32)
    tile = ModalitySpec('h', ('z',), norm='tile', percentiles=(10., 90.))
    c, s = tile.tile_stats(x, nodata=-9999)                   # median 3; 10–90 % = 1.4–4.6, over the normal's 2 × 1.2816
    assert c.tolist() == [3.] and s[0] == pytest.approx(3.2 / 2.5631, rel=1e-4)
    n = tile.normalize(x, nodata=-9999)
    assert np.isfinite(n).all() and n[0, 0, 5:].tolist() == [0., 0., 0.] and n[0, 0, 2] == 0.
    assert n[0, 0, 4] == pytest.approx(2. / s[0], rel=1e-5)
    fixed = ModalitySpec('h', ('z',), norm='fixed', offset=2., scale=.5, nodata=-9999)
    assert fixed.normalize(x).tolist() == [[[-2., 0., 2., 4., 6., 0., 0., 0.]]]
    glob = ModalitySpec('h', ('z',), mean=(3.,), std=(2.,), nodata=-9999)
    assert glob.normalize(x).tolist() == [[[-1., -.5, 0., .5, 1., 0., 0., 0.]]]


def test_old_specs_load_as_global_and_the_dataset_option(tmp_path):
    old = {'name': 'sar', 'bands': ['vv'], 'mean': [-10.], 'std': [3.], 'nodata': None, 'dtype': 'float32'}
    assert from_dict(ModalitySpec, old).norm == 'global'       # a checkpoint written before `norm` existed
    root = build_embedded(tmp_path / 'emb', smoke_config(), progress=False)
    ds = open_dataset(root, 'test', norm={'ndsm': 'tile'})
    assert [s.norm for s in ds.modalities] == ['global', 'tile']
    t = next(iter(ds.tiles()))
    assert abs(float(t['inputs']['ndsm'].median())) < 1e-4     # centred on the tile's own median


def test_adabn_changes_a_copy_not_the_checkpoint(tmp_path):
    from dis2.methods import RunConfig
    from dis2.checkpoint import save_checkpoint, model_from_checkpoint
    ck = save_checkpoint(tmp_path / 'm.pt', RunConfig(), _tiny_model(), SPECS, ISPRS_CLASSES)
    digest = hashlib.sha1(ck.read_bytes()).hexdigest()
    model = model_from_checkpoint(ck)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = [({'optical': 4 + 2 * torch.randn(2, 3, 32, 32), 'ndsm': 6 + torch.randn(2, 1, 32, 32)},
               torch.tensor([[True, True]] * 2)) for _ in range(2)]
    adapted, rep = adapt_norm_stats(model, target)
    assert rep['adapted'] > 0 and rep['batches'] == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())          # the original
    assert hashlib.sha1(ck.read_bytes()).hexdigest() == digest                              # the checkpoint
    moved = [k for k, v in adapted.state_dict().items() if 'running_mean' in k and not torch.equal(v, before[k])]
    assert moved and all('running' in k or 'num_batches' in k
                         for k, v in adapted.state_dict().items() if not torch.equal(v, before[k]))
    assert not adapted.training


def test_generator_shift_is_deterministic_and_moves_the_statistics():
    cfg = SceneConfig(size=32)
    base = generate_scene(cfg, 5)
    sh = SceneShift(optical=BandShift(gain=.8, offset=.05, gamma=.9, noise=.02), ndsm=BandShift(offset=3.), sun_azimuth=300.)
    a, b = generate_scene(cfg, 5, shift=sh), generate_scene(cfg, 5, shift=sh)
    for k in ('optical', 'ndsm', 'label'): assert np.array_equal(a[k], b[k])
    assert np.array_equal(a['label'], base['label']) and not np.array_equal(a['optical'], base['optical'])
    only_h = generate_scene(cfg, 5, shift=SceneShift(ndsm=BandShift(offset=3.)))
    np.testing.assert_allclose(only_h['ndsm'], base['ndsm'] + 3., atol=1e-5)             # exactly the offset
    assert np.array_equal(only_h['optical'], base['optical'])
    assert shifted_config(smoke_config()).shift.splits == ('test',)


def test_cli_has_adapt():
    from dis2.cli import build_parser
    p = build_parser()
    assert p.parse_args(['predict', '--checkpoint', 'c.pt', '--input', 'optical=x.tif', '--out', 'o.tif', '--adapt']).adapt
    assert not p.parse_args(['evaluate', '--checkpoint', 'c.pt', '--data', 'd']).adapt
