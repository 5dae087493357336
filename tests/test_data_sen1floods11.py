"""The data layer on real Sentinel-1/Sentinel-2 chips (Sen1Floods11, shared folder; skipped when absent).

The chips are only read from the shared folder; tests that need broken data make copies in `tmp_path`.
"""
import shutil, warnings

import numpy as np
import pytest

from dis2.core import DataError
from dis2.modalities import IGNORE_INDEX
from dis2.data import open_dataset, shared_data_dir
from dis2.geotiff import read_raster, write_geotiff

S1F = shared_data_dir('sen1floods11')
pytestmark = pytest.mark.skipif(not (S1F/'S1Hand').is_dir(), reason=f'Sen1Floods11 chips not found at {S1F}')
FOLDERS = ('S1Hand', 'S2Hand', 'LabelHand')


def open_lenient(root=S1F, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return open_dataset(root, split='all', on_invalid='missing', **kw)


def copy_chips(dst, chips):
    "Copy the files of `chips` into `dst` in the same layout (so they can be corrupted)."
    for d in FOLDERS:
        for c in chips:
            src = S1F/d/f'{c}_{d}.tif'
            if src.exists():
                (dst/d).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst/d/src.name)
    return dst


def test_modalities_from_folders_and_per_chip_availability():
    ds = open_lenient()
    assert ds.names == ['S1Hand', 'S2Hand']
    assert [s.n_bands for s in ds.modalities] == [2, 13]
    assert ds.classes.names == ('class_0', 'class_1')
    with_s2 = [r.id for r in ds.records if r.paths['S2Hand'] is not None]
    assert with_s2 == ['Spain_7370579']
    i = ds.ids.index('Spain_7370579')
    assert ds[i]['avail'].tolist() == [True, True]
    j = ds.ids.index('India_900498')
    s = ds[j]
    assert s['avail'].tolist() == [True, False]
    assert s['inputs']['S2Hand'].shape == (13, 512, 512) and s['inputs']['S2Hand'].abs().sum() == 0


def test_label_minus_one_is_ignored():
    ds = open_lenient()
    raw = read_raster(S1F/'LabelHand/Bolivia_312675_LabelHand.tif')[0][0]
    y = ds[ds.ids.index('Bolivia_312675')]['label'].numpy()
    assert (y == IGNORE_INDEX).sum() == (raw == -1).sum() > 0
    assert ((y == 1) == (raw == 1)).all() and ((y == 0) == (raw == 0)).all()
    ghana = ds[ds.ids.index('Ghana_83483')]['label']  # a chip with no valid label pixel
    assert (ghana == IGNORE_INDEX).all()


def test_all_nan_sar_is_an_error_by_default_and_missing_on_request():
    with pytest.raises(DataError, match='Paraguay_34417_S1Hand.tif: modality S1Hand: every pixel is NaN'):
        open_dataset(S1F, split='all')
    with pytest.warns(UserWarning, match='Paraguay_34417'):
        ds = open_dataset(S1F, split='all', on_invalid='missing')
    assert 'Paraguay_34417' not in ds.ids and len(ds.ids) == 13   # no modality left: excluded, and said so
    assert any('Paraguay_34417_S1Hand.tif' in r and 'treated as missing' in r for r in ds.report)
    assert any('Paraguay_34417' in r and 'excluded' in r for r in ds.report)


def test_normalised_inputs_are_finite_and_standardised():
    ds = open_lenient()
    x = ds[ds.ids.index('Nigeria_812045')]['inputs']['S1Hand']  # has some NaN pixels
    assert np.isfinite(x.numpy()).all()
    train_like = np.concatenate([ds[i]['inputs']['S1Hand'].reshape(2, -1).numpy() for i in range(len(ds))], 1)
    assert np.abs(train_like.mean(1)).max() < 0.3 and np.abs(train_like.std(1) - 1).max() < 0.3


def test_patches_with_stride_cover_the_chip():
    ds = open_lenient(patch=200, stride=156)
    per_tile = [s for s in range(len(ds)) if ds._index[s][0] == 0]
    assert len(per_tile) == 9                              # rows/cols 0, 156, 312 (flush: 512 - 200)
    assert ds[per_tile[-1]]['id'].endswith(':312:312')


def test_crs_mismatch_is_named(tmp_path):
    root = copy_chips(tmp_path, ['Bolivia_312675', 'Spain_7370579'])
    f = root/'S1Hand/Spain_7370579_S1Hand.tif'
    x, m = read_raster(f)
    write_geotiff(f, x, crs='EPSG:32630', transform=m.transform, nodata=m.nodata)
    with pytest.raises(DataError, match=r'Spain_7370579_S1Hand.tif: not on the same grid as .*Spain_7370579_S2Hand.tif: CRS EPSG:32630 vs EPSG:4326'):
        open_dataset(root, split='all')


def test_size_mismatch_is_named(tmp_path):
    root = copy_chips(tmp_path, ['Bolivia_312675'])
    f = root/'LabelHand/Bolivia_312675_LabelHand.tif'
    x, m = read_raster(f)
    write_geotiff(f, x[:, :256, :256], crs=m.crs, transform=m.transform)
    with pytest.raises(DataError, match=r'Bolivia_312675_S1Hand.tif: not on the same grid as .*Bolivia_312675_LabelHand.tif: size 512x512 vs 256x256'):
        open_dataset(root, split='all')


def test_wrong_band_count_is_named(tmp_path):
    root = copy_chips(tmp_path, ['Bolivia_312675', 'Spain_7370579'])
    f = root/'S1Hand/Spain_7370579_S1Hand.tif'
    x, m = read_raster(f)
    write_geotiff(f, np.concatenate([x, x[:1]]), crs=m.crs, transform=m.transform, nodata=m.nodata)
    with pytest.raises(DataError, match=r'Spain_7370579_S1Hand.tif: modality S1Hand: 3 band\(s\), expected 2'):
        open_dataset(root, split='all')


def test_truncated_chip_is_named(tmp_path):
    root = copy_chips(tmp_path, ['Bolivia_312675', 'India_900498'])
    f = root/'S1Hand/India_900498_S1Hand.tif'
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(DataError, match=r'India_900498_S1Hand.tif: .*truncated'):
        open_dataset(root, split='all')
