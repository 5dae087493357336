"""Fuzzing the readers for a bounded time (a few seconds; `DIS2_FUZZ_SECONDS` to change): random bytes, truncated
and byte-flipped GeoTIFFs, random sizes, band counts and dtypes with NaN, inf and extreme values, single files and
whole own-data folders. Every outcome must be a clear `dis2.core.Dis2Error` naming the file, or a correct
result (right shape, finite normalised inputs, labels within the classes) — never another exception, never a hang."""
import os, signal, time, warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

os.environ['DIS2_SMOKE'] = '1'

from dis2.core import Dis2Error
from dis2.data import open_dataset
from dis2.geotiff import raster_meta, read_raster, mask_absurd, write_geotiff
from dis2.modalities import ModalitySpec, IGNORE_INDEX

SECONDS = float(os.environ.get('DIS2_FUZZ_SECONDS', 4))
DTYPES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'float64']
T = (0.5, 0., 500000., 0., -0.5, 5400000.)
pytestmark = pytest.mark.filterwarnings('ignore')


class Hang(Exception): pass


def _alarm(*_): raise Hang('a reader took more than 20 s')


@pytest.fixture(autouse=True)
def no_hang():
    old = signal.signal(signal.SIGALRM, _alarm)
    yield
    signal.alarm(0); signal.signal(signal.SIGALRM, old)


def random_array(g, count, h, w, dtype):
    dt = np.dtype(dtype)
    if dt.kind == 'f':
        a = g.normal(0, 10 ** g.uniform(-3, 6), (count, h, w)).astype(dt)
        for v in (np.nan, np.inf, -np.inf, np.finfo(dt).max, -np.finfo(dt).max, 0.):
            if g.random() < 0.3: a.flat[g.integers(0, a.size, g.integers(1, max(2, a.size // 4)))] = v
        return a
    info = np.iinfo(dt)
    return g.integers(info.min, int(info.max) + 1, (count, h, w), dtype=np.int64 if info.max < 2**63 else None).astype(dt)


def write_random(g, path, count=None, h=None, w=None, dtype=None, nodata='random'):
    count = count or int(g.integers(1, 5)); h = h or int(g.integers(1, 40)); w = w or int(g.integers(1, 40))
    dtype = dtype or str(g.choice(DTYPES))
    a = random_array(g, count, h, w, dtype)
    nd = (None if g.random() < 0.5 else float(a.flat[0]) if np.isfinite(a.flat[0]) else None) if nodata == 'random' else nodata
    write_geotiff(path, a, crs='EPSG:32632', transform=T, nodata=nd)
    return a, nd


def corrupt(g, path):
    b = bytearray(Path(path).read_bytes())
    kind = g.integers(4)
    if kind == 0: b = b[:int(g.integers(0, len(b)))]                                 # truncated anywhere
    elif kind == 1:                                                                    # flipped bytes (header too)
        for i in g.integers(0, len(b), int(g.integers(1, 20))): b[i] = int(g.integers(256))
    elif kind == 2: b = bytearray(g.integers(0, 256, int(g.integers(0, 4096)), dtype=np.uint8).tobytes())   # noise
    else: b[:4] = b'II*\x00'; b = b[:int(g.integers(8, 64))]                          # a TIFF magic and little else
    Path(path).write_bytes(bytes(b))


def check_read(path, a=None, nd=None):
    "A clear error naming `path`, or the right pixels."
    signal.alarm(20)
    try:
        x, meta = read_raster(path)
    except Dis2Error as e:
        assert str(path) in str(e), e
        return None
    finally: signal.alarm(0)
    if a is not None:
        assert x.shape == a.shape and x.dtype == a.dtype
        np.testing.assert_array_equal(x, a)
    spec = ModalitySpec('m', tuple(f'b{i}' for i in range(x.shape[0])), mean=(0.,) * x.shape[0], std=(1.,) * x.shape[0])
    if x.dtype.kind != 'c':
        y = spec.normalize(mask_absurd(x), meta.nodata)
        assert y.dtype == np.float32 and np.isfinite(y).all()
    return x


def test_fuzz_single_files(tmp_path):
    g, t0, n = np.random.default_rng(int(time.time()) % 2**31), time.time(), 0
    while time.time() - t0 < SECONDS / 2:
        p = tmp_path / f'f{n}.tif'
        a, nd = write_random(g, p)
        check_read(p, a, nd)                        # intact: exactly the pixels written
        corrupt(g, p)
        check_read(p)                               # damaged: an error naming it, or whatever is still readable
        n += 1
    assert n >= 5


def test_fuzz_folders(tmp_path):
    g, t0, n = np.random.default_rng(int(time.time()) % 2**31 + 1), time.time(), 0
    while time.time() - t0 < SECONDS / 2:
        root = tmp_path / f'd{n}'; h, w = int(g.integers(4, 48)), int(g.integers(4, 48))
        stems = [f't{i}' for i in range(int(g.integers(1, 4)))]
        for s in stems:
            write_random(g, root / 'optical' / f'{s}.tif', count=int(g.integers(1, 4)) if s == 't0' else None, h=h, w=w)
            write_random(g, root / 'sar' / f'{s}.tif', h=h, w=w, dtype=str(g.choice(['float32', 'int16'])))
            y = g.integers(0, int(g.integers(1, 4)), (1, h, w)).astype(str(g.choice(['uint8', 'int16', 'float32'])))
            if g.random() < 0.3: y.flat[0] = g.choice([-1, 255, 7, np.nan] if y.dtype.kind == 'f' else [-1 if y.dtype.kind == 'i' else 9, 255, 7])
            write_geotiff(root / 'label' / f'{s}.tif', y, crs='EPSG:32632', transform=T)
        if g.random() < 0.4:
            corrupt(g, root / str(g.choice(['optical', 'sar', 'label'])) / f'{g.choice(stems)}.tif')
        signal.alarm(20)
        try:
            ds = open_dataset(root, str(g.choice(['all', 'train', 'test'])), patch=int(g.integers(8, 40)),
                              on_invalid=str(g.choice(['error', 'missing'])))
            for i in range(len(ds)):
                s = ds[i]
                assert all(np.isfinite(v.numpy()).all() for v in s['inputs'].values())
                lab = s['label']
                assert ((lab >= 0) & (lab < len(ds.classes)) | (lab == IGNORE_INDEX)).all()
        except Dis2Error as e:
            assert str(root) in str(e) or any(k in str(e) for k in ('modality', 'split')), e
        finally: signal.alarm(0)
        n += 1
    assert n >= 3
