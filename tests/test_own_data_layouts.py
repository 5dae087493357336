"""Own data as people actually have it (issue 12): folder layouts, splits, class discovery, per-file nodata and
robust normalisation, through `dis2.data` and the `dis2` command line (smoke mode: tiny models, seconds).

Every dataset here is written from scratch in `tmp_path`: two modalities (`optical`, 3 bands uint8; `sar`,
1 band float32) and class-index labels, on a real UTM grid."""
import json, os, warnings
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ['DIS2_SMOKE'] = '1'
torch.set_num_threads(1)

from dis2.core import ConfigError, DataError
from dis2.data import open_dataset, split_folders
from dis2.geotiff import write_geotiff, read_raster
from dis2.tiles import EmptySplitError
from dis2.modalities import IGNORE_INDEX
from dis2.methods import get_config
from dis2.train import open_run_datasets
from dis2.checkpoint import load_checkpoint
from dis2.cli import main

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')
T = (0.5, 0., 500000., 0., -0.5, 5400000.)


def make_tiles(root, stems, size=64, classes=3, seed=0, minority=None):
    "Write `stems` tiles into `root/{optical,sar,label}`; labels are blobs of `classes` classes (or a `minority` share of class 1)."
    root = Path(root); g = np.random.default_rng(seed)
    for k, stem in enumerate(stems):
        yy, xx = np.mgrid[:size, :size]
        if minority is not None:
            y = np.zeros((size, size), np.uint8)
            r = max(2, int(round(size * np.sqrt(minority / np.pi))))
            cy, cx = g.integers(r, size - r, 2)
            y[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        else:
            y = ((xx // 16 + yy // 16 + k) % classes).astype(np.uint8)
        opt = (y[None] * 60 + g.integers(0, 40, (3, size, size))).astype(np.uint8)
        sar = (y[None].astype(np.float32) * 2 + g.normal(0, 0.5, (1, size, size))).astype(np.float32)
        write_geotiff(root / 'optical' / f'{stem}.tif', opt, crs='EPSG:32632', transform=T)
        write_geotiff(root / 'sar' / f'{stem}.tif', sar, crs='EPSG:32632', transform=T)
        write_geotiff(root / 'label' / f'{stem}.tif', y, crs='EPSG:32632', transform=T)
    return root


STEMS = [f'scene_{i:02d}' for i in range(8)]


# -- layouts and splits ----------------------------------------------------------------------------------------
def test_plain_folder_trains_on_every_tile_and_carves_validation(tmp_path):
    "Before: the hash split silently trained on ~70 % of the tiles (and `val` could be empty)."
    root = make_tiles(tmp_path / 'mydata', STEMS)
    tr, va = open_run_datasets(get_config('dis2', smoke=True), root)
    assert tr.ids == STEMS and va is not None and va.ids == STEMS
    for (r0, c0, h, w), (v0, _, vh, _) in zip(tr.regions, va.regions):      # disjoint rows: top trains, bottom validates
        assert r0 == 0 and h == v0 and v0 + vh == 64 and vh == round(0.15 * 64)
    assert 'all 8 tile(s)' in tr.note and 'held out for validation' in tr.note and 'carved' in va.note
    assert open_dataset(root, 'test').ids == STEMS                           # evaluate/predict: the folder, whole


def test_one_tile_dataset_has_train_and_val(tmp_path):
    "Before: split 'val' has no tile (1 tile(s) in all)."
    root = make_tiles(tmp_path / 'one', ['big'], size=96)
    tr, va = open_run_datasets(get_config('dis2', smoke=True), root)
    assert tr.ids == va.ids == ['big'] and tr.regions[0][2] + va.regions[0][2] == 96


def test_split_folders_are_splits(tmp_path):
    root = tmp_path / 'bench'
    make_tiles(root / 'train', STEMS[:5]); make_tiles(root / 'test', STEMS[5:], seed=1)
    assert sorted(split_folders(root)) == ['test', 'train']
    tr, va = open_run_datasets(get_config('dis2', smoke=True), root)
    assert tr.ids == va.ids == STEMS[:5] and tr.root == root / 'train'      # no val/ folder: carved from train/
    assert open_dataset(root, 'test').ids == STEMS[5:]
    make_tiles(root / 'validation', ['v0'], seed=2)
    tr, va = open_run_datasets(get_config('dis2', smoke=True), root)
    assert va.ids == ['v0'] and tr.regions[0] == (0, 0, 64, 64)             # a val/ folder: train/ is used whole


def test_manifest_without_val_split_means_no_validation(tmp_path):
    "Before: unknown split 'val'."
    root = make_tiles(tmp_path / 'd', STEMS[:3])
    (root / 'dis2.json').write_text(json.dumps({'splits': {'train': STEMS[:2], 'test': STEMS[2:3]}}))
    tr, va = open_run_datasets(get_config('dis2', smoke=True), root)
    assert tr.ids == STEMS[:2] and va is None
    with pytest.raises(EmptySplitError, match="no 'val' split"): open_dataset(root, 'val')


def test_hash_split_only_on_request(tmp_path):
    root = make_tiles(tmp_path / 'd', STEMS)
    (root / 'dis2.json').write_text(json.dumps({'splits': 'hash', 'fractions': {'train': 0.5, 'test': 0.5}}))
    tr, te = open_dataset(root, 'train'), open_dataset(root, 'test')
    assert sorted(tr.ids + te.ids) == STEMS and not set(tr.ids) & set(te.ids) and 'hashing' in tr.note


# -- classes and labels ----------------------------------------------------------------------------------------
def _set_label(root, stem, fn, **kw):
    p = root / 'label' / f'{stem}.tif'
    y, m = read_raster(p)
    write_geotiff(p, fn(y), crs=m.crs, transform=m.transform, **kw)
    return p


def test_stray_label_value_is_refused_naming_the_file(tmp_path):
    "Before: one pixel of 200 silently gave a 201-class model."
    root = make_tiles(tmp_path / 'd', STEMS[:3])
    p = _set_label(root, STEMS[1], lambda y: _px(y, 200))
    with pytest.raises(DataError, match='would make a 201-class model') as e: open_dataset(root, 'train')
    assert str(p) in str(e.value)
    (root / 'dis2.json').write_text(json.dumps({'classes': {'names': ['a', 'b', 'c']}}))
    with pytest.raises(DataError, match=r'label values \[200\] outside the 3 classes') as e: open_dataset(root, 'train')
    assert str(p) in str(e.value)


def _px(y, v):
    y = y.copy(); y[0, 0, 0] = v; return y


def test_class_gap_is_refused(tmp_path):
    root = make_tiles(tmp_path / 'd', STEMS[:2])
    for s in STEMS[:2]: _set_label(root, s, lambda y: np.where(y == 1, 0, y).astype(np.uint8))   # values 0 and 2
    with pytest.raises(DataError, match='1 never appear'): open_dataset(root, 'train')


def test_label_nodata_is_per_file(tmp_path):
    "Before: the first label file's nodata (0) made class 0 unlabelled in every tile."
    root = make_tiles(tmp_path / 'd', STEMS[:2])
    _set_label(root, STEMS[0], lambda y: y, nodata=0)
    ds = open_dataset(root, 'all')
    y0, y1 = (next(t for t in ds.tiles() if t['id'] == s)['label'] for s in STEMS[:2])
    raw1 = read_raster(root / 'label' / f'{STEMS[1]}.tif')[0][0]
    assert (y0 == 0).sum() == 0 and (y0 == IGNORE_INDEX).sum() > 0          # nodata where declared
    assert torch.equal(y1, torch.as_tensor(raw1, dtype=torch.long))           # class 0 kept elsewhere
    assert ds.classes.names == ('class_0', 'class_1', 'class_2')


# -- normalisation -----------------------------------------------------------------------------------------------
def test_float32_max_pixel_does_not_wreck_normalisation(tmp_path):
    "Before: mean 1.2e34, std 1.9e36 for the band, saved in the checkpoint."
    root = make_tiles(tmp_path / 'd', STEMS[:4])
    p = root / 'sar' / f'{STEMS[2]}.tif'
    x, m = read_raster(p); x[0, 5, 5] = np.finfo(np.float32).max
    write_geotiff(p, x, crs=m.crs, transform=m.transform)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        ds = open_dataset(root, 'all')
    sar = ds.modalities[ds.names.index('sar')]
    assert abs(sar.mean[0]) < 10 and 0.1 < sar.std[0] < 10, (sar.mean, sar.std)
    assert any(str(p) in r and 'absurd' in r for r in ds.report) and any('absurd' in str(x.message) for x in w)
    s = next(t for t in ds.tiles() if t['id'] == STEMS[2])['inputs']['sar']
    assert torch.isfinite(s).all() and s[0, 5, 5] == 0 and s.abs().max() < 20  # the fill is invalid, the rest normal
