"""`import dis2` as a library: one test per friction met when building one's own model from dis2's parts.

Each test names the friction it guards against (a plain constructor, a loader, documented and checked contracts).
"""
import importlib
import inspect

import pytest
import torch
from torch import nn

import dis2
from dis2.core import ConfigError, DataError, CheckpointError

MODS = {'optical': 4, 'sar': 2, 'dem': 1}


def _x(b=2, hw=32, mods=MODS):
    g = torch.Generator().manual_seed(0)
    return {m: torch.randn(b, c, hw, hw, generator=g) for m, c in mods.items()}


def test_plain_constructor_and_entry_points():
    "No way in at the top: `dir(dis2)` showed only `__version__`; `SegModel(modalities=…)` was a TypeError."
    assert {'DIS2', 'load', 'list_models', 'CFLMHead', 'compute_losses', 'forward_pair', 'frozen_stack'} <= set(dir(dis2))
    net = dis2.DIS2(modalities=MODS, num_classes=5, size='smoke')
    assert isinstance(net, nn.Module)
    assert ('dis2', dis2.METHODS['dis2'].about) in dis2.list_models()


def test_forward_infers_availability_and_gives_plain_logits():
    "`forward` required `avail` even with every modality given; the output was a dict walk."
    net = dis2.DIS2(MODS, 5, size='smoke').eval()
    x = _x()
    with torch.no_grad():
        out = net(x)
        assert out.logits.shape == (2, 5, 32, 32) and out['logits'] is out.logits
        part = net({'optical': x['optical']})
    assert part.avail.tolist() == [[True, False, False]] * 2


@pytest.mark.parametrize('bad, msg', [
    (lambda x: [x['optical']], 'inputs must be a dict'),
    (lambda x: {**x, 'sar': x['sar'][:, :1]}, 'modality sar: expected (2, 2, H, W)'),
    (lambda x: {**x, 'lidar': x['dem']}, "unknown modality ['lidar']"),
])
def test_wrong_inputs_say_what_was_expected(bad, msg):
    "Wrong inputs failed deep inside ('list' object has no attribute 'flatten', size mismatches)."
    net = dis2.DIS2(MODS, 5, size='smoke').eval()
    with pytest.raises((ConfigError, DataError)) as e: net(bad(_x()))
    assert msg in str(e.value)


def test_avail_must_be_a_bool_tensor():
    "`Boolean value of Tensor … is ambiguous` from `check_inputs` on a wrong `avail`."
    net = dis2.DIS2(MODS, 5, size='smoke').eval()
    with pytest.raises(DataError, match=r'avail must be a bool tensor \(B, 3\)'): net(_x(), [[True, True, True]] * 2)


def test_compute_losses_names_missing_keys():
    "`compute_losses(head_out, labels)` raised `KeyError: 'avail'`; missing `comp_pooled`/`aux` were silently 0."
    logits, labels = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    with pytest.raises(ConfigError, match=r"lacks \['avail'"): dis2.compute_losses({'logits': logits}, labels)
    out = {'logits': logits, 'avail': torch.ones(2, 2, dtype=torch.bool)}
    with pytest.raises(ConfigError, match=r"lacks \['deep', 'aux', 'comp_pooled', 'enc_pooled'\]"):
        dis2.compute_losses(out, labels)
    declared = dis2.seg_output(logits, out['avail'])            # empty parts, declared: their terms are 0 on purpose
    assert float(dis2.compute_losses(declared, labels)['disentangle']) == 0.


def test_custom_model_trains_through_the_protocol(tmp_path):
    "`train(..., model=MyNet())` needed an undocumented `forward_train`; now any model returning the protocol trains."
    from dis2.synthetic import build_embedded, smoke_config
    from dis2.train import open_run_datasets, train

    class Tiny(nn.Module):
        modalities = ('optical', 'ndsm')
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 6, 3, padding=1)
        def forward(self, inputs, avail):
            x = torch.cat([inputs[m] if inputs.get(m) is not None else torch.zeros_like(inputs['optical'][:, :1])
                           for m in self.modalities], 1)
            return dis2.seg_output(self.conv(x), avail)

    root = build_embedded(tmp_path / 'data', smoke_config(), progress=False)
    cfg = dis2.get_config('fusion', smoke=True, data=dict(root=str(root)))
    tr, _ = open_run_datasets(cfg, val=False)
    res = train(cfg, tr, None, tmp_path / 'run', model=Tiny(), progress=False)
    assert res.history[-1]['total'] == res.history[-1]['total']        # finite, not NaN


def test_frozen_stack_is_public():
    "The frozen-stack distillation existed only as the private `SegModel._run_stack_frozen`."
    widths = (4, 8, 8, 8)
    fusion, head = dis2.ConcatFusion(3, widths), dis2.UNetHead(widths, 5, (8, 4, 4), 4)
    slots = [torch.randn(2, 3, c, 32 // 2 ** i, 32 // 2 ** i, requires_grad=True) for i, c in enumerate(widths)]
    o = dis2.frozen_stack(fusion, head, slots, torch.tensor([[True, False, True], [True, True, True]]))
    o['logits'].sum().backward()
    assert all(s.grad is not None for s in slots) and all(p.grad is None for p in fusion.parameters())


def test_cflm_head_on_a_backbone_pyramid():
    "`CFLMHead` assumed strides 2/4/8/16: a stride 4–32 pyramid silently gave logits at half resolution."
    widths = (8, 16, 32, 64)
    pyr = [torch.randn(1, c, 128 // s, 128 // s) for c, s in zip(widths, (4, 8, 16, 32))]
    assert dis2.CFLMHead(widths, 5, strides=(4, 8, 16, 32))(pyr)['logits'].shape == (1, 5, 128, 128)
    with pytest.raises(ConfigError, match='strides double'): dis2.CFLMHead(widths, 5, strides=(4, 8, 16, 64))
    with pytest.raises(ConfigError, match='expected pyramid maps'): dis2.CFLMHead(widths, 5)(pyr[::-1])


def test_defaults_agree_with_the_documented_recipe():
    "`LossConfig()` had complement weights and distillation 5; preset and config widths disagreed; (3, 1) kept silently."
    lc = dis2.LossConfig()
    assert (lc.class_weighting, lc.distill) == ('inverse_sqrt', 1.0)
    net = dis2.DIS2({'optical': 3, 'ndsm': 1}, 6)                   # size='cpu': what the compendium trains
    assert net.cfg.widths == dis2.get_config('dis2').model['widths']
    with pytest.raises(ConfigError, match='give in_channels'): dis2.model_config('dis2', ('optical', 'sar'))


def test_one_argument_order_and_name_per_concept():
    "`CFLMHead(n_classes, widths)` vs `AuxHead(widths, n_classes)`; `avail` vs `real`; `in_ch`/`in_channels`."
    from dis2.encoders import AuxHead, ModalityEncoder
    for head in (dis2.CFLMHead, dis2.UNetHead, AuxHead):
        assert list(inspect.signature(head).parameters)[:2] == ['widths', 'n_classes'], head
    for fusion in (dis2.ConcatFusion, dis2.HierarchicalHybridFusion):
        assert list(inspect.signature(fusion.forward).parameters)[1:3] == ['slots', 'avail'], fusion
    assert list(inspect.signature(ModalityEncoder).parameters)[0] == 'in_channels'


def test_every_public_forward_documents_itself():
    "43 of 77 public methods — every `forward` — had no docstring."
    missing = []
    for m in ('encoders', 'fusion', 'cflm', 'dlkd', 'model', 'peers', 'methods', 'losses', 'checkpoint'):
        mod = importlib.import_module(f'dis2.{m}')
        for name, cls in vars(mod).items():
            if name.startswith('_') or not inspect.isclass(cls) or cls.__module__ != mod.__name__: continue
            missing += [f'{m}.{name}.{k}' for k, f in vars(cls).items()
                        if not k.startswith('_') and callable(f) and not (f.__doc__ or '').strip()]
    assert missing == []


def test_load_gives_a_ready_model_of_any_architecture(tmp_path):
    "`model_from_checkpoint` returned a tuple, refused non-SegModels, and no preprocessing travelled with the model."
    from dis2.checkpoint import save_checkpoint, build_model
    from dis2.modalities import ModalitySpec, ClassSet
    specs = [ModalitySpec('optical', ('r', 'g', 'b')), ModalitySpec('ndsm', ('h',), mean=(1.,), std=(2.,))]
    classes = ClassSet(('a', 'b', 'c'))
    rc = dis2.get_config('late', smoke=True)                           # a peer architecture, not a SegModel
    ck = save_checkpoint(tmp_path / 'late.pt', rc, build_model(rc, specs, classes), specs, classes)
    model = dis2.load(ck)
    assert type(model).__name__ == 'LateFusion' and not model.training
    assert (model.specs, model.classes.names, model.train_patch) == (specs, ('a', 'b', 'c'), rc.train.patch)
    assert model.preprocess({'ndsm': torch.full((1, 4, 4), 3.).numpy()})['ndsm'].unique().tolist() == [1.0]
    (tmp_path / 'bad.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='bad.pt'): dis2.load(tmp_path / 'bad.pt')


def test_evaluation_window_defaults_to_the_training_patch():
    "The evaluation window defaulted to 256 whatever the training patch."
    from dis2.evaluate import _default_window
    m = nn.Identity(); m.train_patch = 64
    assert _default_window(m, None) == 64
