"""ISPRS Vaihingen and Potsdam folders laid out as the official archives unpack (issue 15).

`nested`: each archive unzipped into a folder of its own name; `flat`: all unzipped into one folder, so the
label archives (which hold no folder) put the labels beside `top/` or `4_Ortho_RGBIR/`, without
georeferencing; this is the layout torchgeo's `Vaihingen2D` / `Potsdam2D` fixtures reproduce, with their tile
ids (Vaihingen areas 1, 11 train and 6, 24 test; Potsdam 2_10, 2_11 train and 5_15, 6_15 test). The tiles are
tiny GeoTIFFs written by `dis2.isprs_layout.write_isprs_fixture` in temporary folders; nothing is committed."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ['DIS2_SMOKE'] = '1'
torch.set_num_threads(1)

from dis2.core import ConfigError, DataError
from dis2.data import open_dataset
from dis2.geotiff import read_raster, write_geotiff
from dis2.tiles import EmptySplitError
from dis2.isprs import isprs_defaults
from dis2.isprs_layout import OPTICAL_BANDS, find_isprs_files, write_isprs_fixture
from dis2.cli import main

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::rasterio.errors.NotGeoreferencedWarning')

VAI_AREAS, POT_TILES = (1, 11, 24, 6), ('2_10', '2_11', '5_15', '6_15')


def vaihingen(tmp_path, layout='flat', **kw):
    return write_isprs_fixture(tmp_path / f'vai_{layout}', 'vaihingen', areas=VAI_AREAS, size=24, layout=layout, **kw)


def potsdam(tmp_path, layout='flat', **kw):
    return write_isprs_fixture(tmp_path / f'pot_{layout}', 'potsdam', areas=POT_TILES, size=24, layout=layout, **kw)


def opened(root, split='train', **kw):
    return open_dataset(root, split, verbose=False, cache_dir=Path(root).parent / 'cache', **kw)


# -- Vaihingen --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('layout', ['flat', 'nested'])
def test_vaihingen_layouts_with_dsm_read_labels_and_derive_the_ndsm(tmp_path, layout):
    root = vaihingen(tmp_path, layout)
    files = find_isprs_files(root, 'vaihingen')
    assert {k: sorted(v) for k, v in files.items()} == {k: ['area1', 'area11', 'area24', 'area6'] for k in
                                                        ('optical_IRRG', 'label', 'eroded', 'dsm')}
    assert all(p.parent.name == 'top' for p in files['optical_IRRG'].values())
    assert all(p.parent.name != 'top' for p in files['label'].values())
    tr, te = opened(root, 'train'), opened(root, 'test')
    assert (tr.ids, te.ids, tr.names, tr.label_kind) == (['area1', 'area11'], ['area6', 'area24'], ['optical', 'ndsm'], 'full')
    assert 'derived from the DSM 2/2' in tr.summary and 'eroded also here' in tr.summary
    # the label decodes to classes (a flat-layout label read as an image would have failed the band/colour checks)
    y = next(tr.tiles())['label']
    assert 1 < len(np.unique(y.numpy())) <= 6


def test_vaihingen_without_dsm_says_what_to_type(tmp_path):
    root = vaihingen(tmp_path, heights=(), labels=('full',))      # ISPRS_semantic_labeling_Vaihingen.zip's top/ + complete GT
    with pytest.raises(DataError) as e:
        opened(root)
    msg = str(e.value)
    assert str(root) in msg and 'dsm_09cm_matching_area<N>.tif' in msg and 'ndsm_09cm_matching_area<N>.tif' in msg
    assert '`--modalities optical --config unimodal`' in msg and 'specs=' not in msg
    for kw in (dict(modalities=['optical']), dict(height='none')):
        ds = opened(root, **kw)
        assert (ds.ids, ds.names, ds.height) == (['area1', 'area11'], ['optical'], None)
    assert opened(root, 'test', modalities='optical').ids == ['area6', 'area24']
    with pytest.raises(DataError, match='looked for the DSM'):
        opened(root, height='dsm')


def test_vaihingen_eroded_labels_only_are_used_and_an_explicit_full_is_refused(tmp_path):
    root = vaihingen(tmp_path, labels=('eroded',))
    ds = opened(root)
    assert ds.label_kind == 'eroded' and 'labels: eroded 2/2' in ds.summary
    assert (next(ds.tiles())['label'] == 255).any()                 # the black boundaries are ignored
    with pytest.raises(DataError, match='found eroded labels for 4 tile.s.: use `--labels eroded`'):
        opened(root, label='full')
    both = vaihingen(tmp_path, 'nested')
    assert opened(both, label='eroded').label_kind == 'eroded' and opened(both).label_kind == 'full'


def test_vaihingen_image_named_files_that_cannot_be_told_apart_are_refused(tmp_path):
    root = tmp_path / 'renamed'
    for d in ('images', 'masks'):
        write_geotiff(root / d / 'top_mosaic_09cm_area1.tif', np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match='cannot tell image from label.*folder named top/'):
        opened(root)


def test_no_label_at_all_is_an_error_naming_the_files(tmp_path):
    root = vaihingen(tmp_path, labels=())
    with pytest.raises(DataError, match=r'no vaihingen label file found.*top_mosaic_09cm_area<N>_noBoundary\.tif'):
        opened(root)


# -- Potsdam ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('layout', ['flat', 'nested'])
def test_potsdam_rgbir_only_is_read_and_irrg_is_refused_with_the_flag_to_type(tmp_path, layout):
    root = potsdam(tmp_path, layout, variants=('RGBIR',), heights=(), labels=('full',))
    with pytest.raises(DataError, match='no potsdam height file found'):
        opened(root)
    ds = opened(root, 'all', height='none')
    assert (ds.optical_variant, ds.ids, ds.modalities[0].bands) == ('RGBIR', list(POT_TILES), OPTICAL_BANDS['RGBIR'])
    assert next(ds.tiles())['inputs']['optical'].shape[0] == 4
    for kw in (dict(optical='irrg'), dict(optical='IRRG', modalities=['optical'])):
        with pytest.raises(DataError) as e:
            opened(root, **kw)
        assert 'top_potsdam_<a>_<b>_IRRG.tif' in str(e.value) and 'found RGBIR for 4 tile(s): use `--optical-variant rgbir`' in str(e.value)


def test_potsdam_variant_choice_follows_the_protocol_the_flag_and_the_model(tmp_path):
    root = potsdam(tmp_path, 'nested')                               # all three variants, DSM, nDSM, both labels
    ds = opened(root)
    assert ds.optical_variant == 'IRRG' and 'also here: RGB 2/2, RGBIR 2/2' in ds.summary
    assert ds.names == ['optical', 'ndsm'] and 'nDSM files 2/2' in ds.summary
    assert opened(root, optical='rgb').modalities[0].bands == OPTICAL_BANDS['RGB']
    with isprs_defaults(optical='rgbir'):                            # the CLI's route
        tr = opened(root)
        assert opened(root, optical='rgb').optical_variant == 'RGB'  # an explicit argument wins
    assert tr.optical_variant == 'RGBIR'
    te = opened(root, 'test', specs=tr.modalities)                  # a model's bands decide, without any flag
    assert te.optical_variant == 'RGBIR' and te.modalities[0].mean == tr.modalities[0].mean
    with pytest.raises(ConfigError, match='contradicts'):
        opened(root, 'test', specs=tr.modalities, optical='irrg')
    assert opened(root, height='dsm').names == ['optical', 'dsm']
    assert opened(root, modalities=['dsm']).names == ['dsm']


def test_potsdam_rgb_only_and_height_products(tmp_path):
    rgb = potsdam(tmp_path, 'flat', variants=('RGB',), heights=('dsm',))
    ds = opened(rgb)
    assert (ds.optical_variant, ds.height) == ('RGB', 'ndsm') and 'derived from the DSM 2/2' in ds.summary
    nd = read_raster(ds.records[0].paths['ndsm'])[0]
    assert nd.dtype == np.float32 and np.nanmax(nd) > 1
    only_ndsm = potsdam(tmp_path / 'n', 'nested', variants=('IRRG',), heights=('ndsm',))
    assert str(opened(only_ndsm).records[0].paths['ndsm']).endswith('_normalized_lastools.jpg')
    with pytest.raises(DataError, match='found nDSM files for 4 tile.s.: use `--height ndsm`'):
        opened(only_ndsm, height='dsm')
    with pytest.raises(ConfigError, match="unknown modality \\['sar'\\]"):
        opened(only_ndsm, modalities=['optical', 'sar'])


def test_a_split_without_tiles_is_an_empty_split(tmp_path):
    root = write_isprs_fixture(tmp_path / 'p', 'potsdam', areas=('2_10',), size=24, variants=('IRRG',))
    with pytest.raises(EmptySplitError, match="no potsdam tile of split 'test'.*2_10"):
        opened(root, 'test')


def test_summary_line_is_printed(tmp_path, capsys):
    root = potsdam(tmp_path, variants=('RGBIR',), heights=())
    open_dataset(root, 'train', height='none')
    err = capsys.readouterr().err
    assert "dis2: potsdam split 'train', 2 tile(s)" in err and 'optical: RGBIR 2/2' in err and 'no DSM or nDSM file' in err


# -- the command line ---------------------------------------------------------------------------------------

def test_cli_train_and_evaluate_on_the_downloads_people_have(tmp_path, capsys):
    vai = vaihingen(tmp_path, heights=(), labels=('full',))
    assert main(['train', '--data', str(vai), '--out', str(tmp_path / 'r0')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('dis2 train: error: ') and '--modalities optical --config unimodal' in err
    pot = potsdam(tmp_path, variants=('RGBIR',), heights=(), labels=('full',))
    assert main(['train', '--data', str(pot), '--modalities', 'optical', '--optical-variant', 'irrg',
                 '--out', str(tmp_path / 'r1')]) == 2
    assert '--optical-variant rgbir' in capsys.readouterr().err
    run = tmp_path / 'run'
    assert main(['train', '--data', str(pot), '--height', 'none', '--config', 'unimodal', '--epochs', '1',
                 '--out', str(run)]) == 0
    err = capsys.readouterr().err
    assert "potsdam split 'train'" in err and "potsdam split 'val'" in err and 'optical: RGBIR' in err
    assert main(['evaluate', '--checkpoint', str(run / 'last.pt'), '--data', str(pot), '--out', str(tmp_path / 'ev')]) == 0
    assert "potsdam split 'test', 2 tile(s)" in capsys.readouterr().err and list((tmp_path / 'ev').glob('*.csv'))
