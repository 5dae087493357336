"Georeferenced sliding-window inference (`dis2.predict`): grid, colours, blending, refusals, nodata, atomicity, memory."
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.transform import from_origin

from dis2.core import ConfigError, DataError
from dis2.modalities import ModalitySpec, ClassSet
from dis2.predict import predict_geotiff, benchmark_predict
from dis2.streaming import BandAccumulator

SPECS = [ModalitySpec('optical', ('r', 'g', 'b'), mean=(100,) * 3, std=(50,) * 3),
         ModalitySpec('ndsm', ('h',), mean=(5,), std=(4,), nodata=-9999)]
CLASSES = ClassSet(('water', 'land', 'urban'), ((0, 0, 255), (0, 255, 0), (255, 0, 0)))
GRID = dict(crs='EPSG:32633', transform=from_origin(300000, 6000000, 2.0, 2.0))


class Toy(torch.nn.Module):
    "SegModel stand-in with a 3×3 receptive field and stride-4 attention maps; can be told to fail on call `fail_at`."
    def __init__(self, k=3, fail_at=None):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.ModuleDict({s.name: torch.nn.Conv2d(s.n_bands, 6, 1) for s in SPECS})
        self.head = torch.nn.Conv2d(6, k, 3, padding=1)
        self.calls, self.fail_at, self.avails = 0, fail_at, []
    def forward(self, inputs, avail):
        self.calls += 1; self.avails.append(avail.clone())
        if self.fail_at is not None and self.calls >= self.fail_at: raise RuntimeError('boom')
        f = sum(self.proj[s.name](inputs[s.name]) * avail[:, i, None, None, None] for i, s in enumerate(SPECS))
        logits = self.head(torch.tanh(f))
        a = F.avg_pool2d(logits, 4)
        return {'logits': logits, 'attn': a.flatten(2).softmax(-1).view_as(a)}


def write(path, arr, crs=GRID['crs'], transform=GRID['transform']):
    with rasterio.open(path, 'w', driver='GTiff', count=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                       dtype=arr.dtype, crs=crs, transform=transform) as d: d.write(arr)
    return path


@pytest.fixture
def tile(tmp_path):
    def make(h, w, seed=0):
        g = np.random.default_rng(seed)
        return {'optical': write(tmp_path/f'opt{h}x{w}.tif', g.uniform(0, 255, (3, h, w)).astype(np.float32)),
                'ndsm': write(tmp_path/f'ndsm{h}x{w}.tif', g.uniform(0, 20, (1, h, w)).astype(np.float32))}
    return make


def direct(model, paths):
    x = {s.name: torch.from_numpy(s.normalize(rasterio.open(paths[s.name]).read()))[None] for s in SPECS}
    with torch.inference_mode(): return model(x, torch.ones(1, 2, dtype=torch.bool))['logits'][0].argmax(0).numpy()


def run(model, inputs, out, **kw):
    return predict_geotiff(model, inputs, out, specs=SPECS, classes=CLASSES, progress=False, **kw)


def test_single_window_equals_direct_and_keeps_grid(tile, tmp_path):
    paths, model = tile(48, 48), Toy()
    s = run(model, paths, tmp_path/'sub'/'dir'/'lab.tif', window=48)       # parent folders are created
    with rasterio.open(s.path) as d:
        assert d.crs == rasterio.crs.CRS.from_user_input(GRID['crs']) and d.transform == GRID['transform']
        assert d.dtypes[0] == 'uint8' and d.nodata == 255
        assert d.colormap(1)[2] == (255, 0, 0, 255)
        lab = d.read(1)
    np.testing.assert_array_equal(lab, direct(model, paths))
    assert s.windows == 1 and sum(s.class_hist.values()) == 48 * 48 and s.mp_s > 0


def test_overlap_blending_close_and_accumulator_bounded(tile, tmp_path, monkeypatch):
    paths, model = tile(200, 72), Toy()
    rows_seen = []
    orig = BandAccumulator.add
    def spy(self, values, r, c, weight):
        orig(self, values, r, c, weight); rows_seen.append((self.sums['probs'].shape, r + weight.shape[0] - self.top))
    monkeypatch.setattr(BandAccumulator, 'add', spy)
    s = run(model, paths, tmp_path/'lab.tif', window=32, overlap=0.5, batch_size=4,
            probs_out=tmp_path/'p.tif', attn_out=tmp_path/'a.tif', probs_dtype='float32')
    lab = rasterio.open(s.path).read(1)
    assert (lab == direct(model, paths)).mean() > 0.97
    assert {shape for shape, _ in rows_seen} == {(3, 32, 72)}                   # K × window × W, never K × H × W
    assert max(used for _, used in rows_seen) <= 32 and s.acc_rows <= 32
    p = rasterio.open(s.probs_path).read()
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
    a = rasterio.open(s.attn_path).read()
    assert a.shape == (3, 200, 72) and np.isfinite(a).all()


@pytest.mark.parametrize('what', ['crs', 'size', 'resolution', 'origin', 'bands'])
def test_mismatched_inputs_are_refused_naming_the_file(tile, tmp_path, what):
    paths = tile(32, 32)
    z = np.zeros((1, 32, 32), np.float32)
    bad = {'crs': lambda p: write(p, z, crs='EPSG:4326'),
           'size': lambda p: write(p, np.zeros((1, 32, 40), np.float32)),
           'resolution': lambda p: write(p, z, transform=from_origin(300000, 6000000, 1.0, 1.0)),
           'origin': lambda p: write(p, z, transform=from_origin(300100, 6000000, 2.0, 2.0)),
           'bands': lambda p: write(p, np.zeros((2, 32, 32), np.float32))}[what](tmp_path/f'bad_{what}.tif')
    with pytest.raises(DataError, match=f'bad_{what}.tif'):
        run(Toy(), {'optical': paths['optical'], 'ndsm': bad}, tmp_path/'lab.tif', window=32)
    assert not (tmp_path/'lab.tif').exists()


def test_unknown_or_no_modality(tile, tmp_path):
    paths = tile(32, 32)
    with pytest.raises(ConfigError, match=r"\['optical', 'ndsm'\]"): run(Toy(), {'sar': paths['ndsm']}, tmp_path/'x.tif')
    with pytest.raises(ConfigError, match='at least one'): run(Toy(), {}, tmp_path/'x.tif')


def test_missing_modality_subset(tile, tmp_path):
    paths, model = tile(40, 40), Toy()
    s = run(model, {'optical': paths['optical']}, tmp_path/'lab.tif', window=32)
    assert s.modalities == ('optical',)
    assert all(a[:, 1].logical_not().all() and a[:, 0].all() for a in model.avails)


def test_nan_inf_nodata_never_nan(tmp_path):
    g = np.random.default_rng(0)
    opt = g.uniform(0, 255, (3, 40, 40)).astype(np.float32); opt[:, 20:] = np.nan; opt[1, :4, :4] = np.inf
    ndsm = g.uniform(0, 20, (1, 40, 40)).astype(np.float32); ndsm[:, 30:] = -9999
    paths = {'optical': write(tmp_path/'o.tif', opt), 'ndsm': write(tmp_path/'n.tif', ndsm)}
    s = run(Toy(), paths, tmp_path/'lab.tif', window=32, probs_out=tmp_path/'p.tif', probs_dtype='float32')
    lab = rasterio.open(s.path).read(1)
    assert (lab[30:] == 255).all() and (lab[:30] != 255).all() and s.nodata_pixels == 10 * 40
    assert np.isfinite(rasterio.open(s.probs_path).read()).all()


def test_failure_midway_leaves_no_file(tile, tmp_path):
    paths = tile(96, 96)
    out = tmp_path/'o'
    with pytest.raises(RuntimeError, match='boom'):
        run(Toy(fail_at=3), paths, out/'lab.tif', window=32, batch_size=1, probs_out=out/'p.tif', attn_out=out/'a.tif')
    assert list(out.iterdir()) == []


def test_tile_smaller_than_window(tile, tmp_path):
    s = run(Toy(), tile(20, 28), tmp_path/'lab.tif', window=32)
    assert rasterio.open(s.path).read(1).shape == (20, 28) and s.nodata_pixels == 0


def test_benchmark_reports_numbers():
    r = benchmark_predict(Toy(), size=96, window=32, specs=SPECS, classes=CLASSES, threads=1)
    assert r['predict_mp_s'] > 0 and r['predict_peak_rss_mb'] >= 0 and r['windows'] == 16


def test_from_checkpoint_with_real_model(tile, tmp_path):
    model_mod, methods = pytest.importorskip('dis2.model'), pytest.importorskip('dis2.methods')
    ckpt_mod = pytest.importorskip('dis2.checkpoint')
    cfg = methods.model_config('dis2', widths=(8, 16, 32, 64), heads=4, class_widths=(8,) * 4, dec_widths=(8,) * 3,
                                 penultimate=8, aux_width=8, n_classes=3)
    ck = ckpt_mod.save_checkpoint(tmp_path/'m.pt', methods.RunConfig(), model_mod.SegModel(cfg).eval(), SPECS, CLASSES)
    s = predict_geotiff(ck, {'ndsm': tile(70, 90)['ndsm']}, tmp_path/'lab.tif', window=64, attn_out=tmp_path/'a.tif',
                        progress=False)
    with rasterio.open(s.path) as d: assert d.shape == (70, 90) and d.colormap(1)[0] == (0, 0, 255, 255)
    assert s.modalities == ('ndsm',) and rasterio.open(s.attn_path).count == 3
