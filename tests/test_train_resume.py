"""A training run killed with SIGKILL mid-epoch, then resumed, ends exactly where an uninterrupted run ends.

This file is also the training script the test (and tests/test_ddp.py, under torchrun) runs in a subprocess:
    python tests/test_train_resume.py OUT_DIR [--kill-at-step N] [--batch-size B] [--epochs E] [--additive]
"""
import os, sys, json, signal, argparse, subprocess
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
H, N_SAMPLES, MODS = 32, 16, ('optical', 'ndsm')


def tiny_dataset(n=N_SAMPLES, seed=0):
    "An in-memory dataset of `make_sample` samples (some without nDSM) with the `open_dataset` attributes."
    from dis2.modalities import ModalitySpec, ClassSet, make_sample

    class DS(torch.utils.data.Dataset):
        modalities = [ModalitySpec('optical', ('r', 'g', 'b')), ModalitySpec('ndsm', ('h',), mean=(1.,), std=(2.,))]
        classes = ClassSet(('a', 'b', 'c'))

        def __init__(self):
            g = torch.Generator().manual_seed(seed)
            self.samples = []
            for i in range(n):
                y = torch.randint(0, 3, (H, H), generator=g)
                x = {'optical': torch.randn(3, H, H, generator=g) + y[None],
                     'ndsm': None if i % 5 == 4 else torch.randn(1, H, H, generator=g) + (y == 1)[None]}
                self.samples.append(make_sample(x, MODS, y, f't{i}', shapes={'ndsm': 1}))

        def __len__(self): return len(self.samples)
        def __getitem__(self, i): return self.samples[i]
    return DS()


def tiny_model(ds):
    "The real `SegModel` at the smallest size when `dis2.model` provides it, else a stand-in with its output contract."
    torch.manual_seed(0)
    try:
        from dis2.model import SegModel  # noqa: F401
        from dis2.methods import get_config
        from dis2.checkpoint import build_model
        return build_model(get_config('dis2', smoke=True, model={'norm': 'gn', 'dropout': 0.}), ds.modalities, ds.classes)
    except ImportError:
        return StandIn()


class StandIn(nn.Module):
    "Per-modality 1x1 encoders, availability-masked fusion, compensation of missing slots, linear head."
    def __init__(self, w=8, in_ch=(3, 1), K=3):
        super().__init__()
        self.enc = nn.ModuleList([nn.Conv2d(c, w, 1) for c in in_ch])
        self.comp = nn.ModuleList([nn.Conv2d(w, w, 1) for _ in in_ch])
        self.pen, self.head = nn.Conv2d(w, w, 3, padding=1), nn.Conv2d(w, K, 1)

    def forward(self, inputs, avail):
        av = avail.float()[:, :, None, None, None]
        f = torch.stack([e(x) for e, x in zip(self.enc, inputs.values())], 1)
        have = (f * av).sum(1) / av.sum(1).clamp_min(1)
        comp = torch.stack([c(have) for c in self.comp], 1) * (1 - av)
        fused = (f * av + comp).mean(1)
        pen = torch.relu(self.pen(fused))
        return {'logits': self.head(pen), 'deep': [], 'aux': {}, 'fused': [fused], 'token': fused.mean((2, 3)),
                'penultimate': pen, 'enc_pooled': [f.mean((3, 4))], 'comp_pooled': [comp.mean((3, 4))], 'avail': avail}

    def forward_train(self, inputs, avail_teacher, avail_student):
        return self(inputs, avail_teacher), self(inputs, avail_student)


# loss options under which a batch's loss is the mean of its halves' losses (no batch-level class weights, Dice
# sums or means over a data-dependent subset): DDP must then reproduce one process almost exactly
ADDITIVE = dict(class_weighting=False, dice=0., aux=0., distill=0., disentangle=0.)


def run_config(batch_size=4, epochs=2, checkpoint_every_steps=3, additive=False):
    from dis2.methods import get_config
    return get_config('dis2', smoke=True, model={'norm': 'gn', 'dropout': 0.}, epochs=epochs, batch_size=batch_size,
                      max_steps_per_epoch=None, checkpoint_every_steps=checkpoint_every_steps, lr=5e-3, warmup=0.2,
                      log_every=1, distill_warmup_epochs=0, threads=1, seed=3, **(ADDITIVE if additive else {}))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('out'); ap.add_argument('--kill-at-step', type=int, default=0)
    ap.add_argument('--batch-size', type=int, default=4); ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--additive', action='store_true')
    a = ap.parse_args(argv)
    from dis2.train import train

    def cb(event, info):
        if event == 'step' and info['step'] == a.kill_at_step: os.kill(os.getpid(), signal.SIGKILL)
    ds = tiny_dataset()
    res = train(run_config(a.batch_size, a.epochs, additive=a.additive), ds, None, a.out, model=tiny_model(ds), progress=False, callback=cb)
    if int(os.environ.get('RANK', 0)) == 0:
        Path(a.out, 'history.json').write_text(json.dumps(res.history))


def run_script(out, *args, torchrun=0, timeout=120):
    "Run this file as a training subprocess (under torchrun with `torchrun` processes if > 0)."
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'DIS2_THREADS': '1'}
    pre = [sys.executable] + (['-m', 'torch.distributed.run', '--nproc_per_node', str(torchrun), '--standalone'] if torchrun else [])
    return subprocess.run(pre + [__file__, str(out), *map(str, args)], env=env, cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True)


def state(path):
    from dis2.checkpoint import load_checkpoint
    return load_checkpoint(path).model


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    from dis2.checkpoint import load_checkpoint
    ref = run_script(tmp_path / 'ref')
    assert ref.returncode == 0, ref.stderr[-3000:]
    # 4 steps per epoch, checkpoints every 3 steps: a mid-epoch checkpoint at step 6 (epoch 1, batch 2);
    # killed at step 7, i.e. after that checkpoint and after one more step that is lost and must be redone
    cut = run_script(tmp_path / 'cut', '--kill-at-step', 7)
    assert cut.returncode == -signal.SIGKILL, (cut.returncode, cut.stderr[-3000:])
    ck = load_checkpoint(tmp_path / 'cut' / 'last.pt')
    assert (ck.epoch, ck.batch, ck.step) == (1, 2, 6)
    assert not (tmp_path / 'cut' / 'history.json').exists()
    res = run_script(tmp_path / 'cut')
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = state(tmp_path / 'ref' / 'last.pt'), state(tmp_path / 'cut' / 'last.pt')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = (json.loads((tmp_path / d / 'history.json').read_text()) for d in ('ref', 'cut'))
    strip = lambda h: [{k: v for k, v in e.items() if k != 'time_s'} for e in h]
    assert strip(ha) == strip(hb)
    assert len([e for e in ha if e['kind'] == 'step']) == 8


if __name__ == '__main__':
    main()
