#!/usr/bin/env python
"""`make gpu-check`: exercise dis2's CUDA paths on a GPU machine and compare them with the CPU.

Usage: python tools/gpu_check.py [--out runs/gpu_check] [--device cuda] [--steps 4]
Without a CUDA device it prints why it skips and exits 0. `--device cpu` runs every check on the CPU instead
(AMP and channels-last are CUDA-only in `dis2.train`, DDP uses gloo): that is how the script's own logic is
checked on a machine without a GPU; it proves nothing about CUDA.

On a tiny embedded benchmark (4 train tiles of 64², smoke-sized DIS2, dropout 0 so CPU and GPU draw the same
randomness) it runs, and compares with the same work done on the CPU in fp32:
1. `train_amp`: `dis2.train.train` for 2 epochs × `--steps` steps with AMP (bf16 where supported, else fp16 with
   a gradient scaler) and channels-last. Tolerance: the first step's total loss within 5 % of the CPU's
   (bf16 keeps ~3 significant digits; the inputs and initial weights are identical), the last epoch's mean
   loss within 25 % (a few steps of a different arithmetic drift apart; this bounds a broken path, e.g. a scaler
   that skips every step, not numerical identity).
2. `resume`: the same run stopped after epoch 1 and resumed from `last.pt` ends at the same step count, and
   its per-step losses are within 5 % of the uninterrupted GPU run (cuDNN is not deterministic by default).
3. `predict`: `dis2.predict.predict_geotiff` of a test tile with the *CPU-trained* checkpoint on the GPU
   (channels-last) vs on the CPU, with both modalities and with only the optical one: class probabilities
   within 0.02 (stored as float32; cuDNN convolutions may use TF32) and ≥ 99.5 % of labels equal.
4. `ddp`: `torchrun --standalone --nproc_per_node 1` runs one training step of the CPU checkpoint wrapped in
   `DistributedDataParallel` over a NCCL process group (gloo with `--device cpu`), next to the same step without
   DDP: loss equal to 1e-6 relative and gradients to 1e-4 (one rank: the all-reduce averages over one copy), an
   `all_reduce` of the rank's loss returns it, and the loss is within 1 % of the CPU's (TF32).
Writes `<out>/gpu_check.json` (every number, every tolerance, pass/fail); exit status 1 when a check fails.
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(first_loss_rel=0.05, last_epoch_loss_rel=0.25, resume_loss_rel=0.05, predict_prob_abs=0.02,
           predict_label_agree=0.995, ddp_loss_rel=1e-6, ddp_grad_rel=1e-4, ddp_vs_cpu_loss_rel=0.01)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def run_config(device: str, steps: int, amp: str = 'none'):
    "The smoke-sized DIS2 config of every check: 2 epochs × `steps` steps, batch 4 of 32² patches, dropout 0."
    from dis2.methods import get_config
    return get_config('dis2', smoke=True, model={'dropout': 0.}, epochs=2, max_steps_per_epoch=steps, batch_size=4,
                      patch=32, stride=32, log_every=1, checkpoint_every_steps=0, amp=amp, channels_last=True,
                      distill_warmup_epochs=0)


def step_losses(history) -> list:
    return [h['total'] for h in history if h.get('kind') == 'step']


def epoch_losses(history) -> list:
    return [h['total'] for h in history if h.get('kind') == 'epoch']


class _Stop(Exception):
    "Raised by the training callback to simulate a run killed after an epoch's checkpoint."


def _train(cfg, ds, out, device, stop_after_epoch=None):
    from dis2.train import train
    def cb(event, info):
        if event == 'checkpoint' and stop_after_epoch is not None and info['epoch'] == stop_after_epoch: raise _Stop
    try: return train(cfg, ds, None, out_dir=out, resume=True, device=device, progress=False, callback=cb)
    except _Stop: return None


def check(name, ok, **numbers) -> dict:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: " + ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                                                       for k, v in numbers.items()), flush=True)
    return dict(name=name, ok=bool(ok), **numbers)


# --- the DDP child (runs under torchrun) -------------------------------------------------------------------------
def ddp_child(out: Path, device: str) -> int:
    import torch, torch.distributed as dist
    from torch import nn
    from dis2.checkpoint import model_from_checkpoint
    from dis2.data import open_dataset
    from dis2.losses import compute_losses
    from dis2.modalities import collate_samples, avail_from_missing
    local = int(os.environ.get('LOCAL_RANK', 0))
    dev = torch.device('cuda', local) if device == 'cuda' else torch.device('cpu')
    if dev.type == 'cuda': torch.cuda.set_device(dev)
    dist.init_process_group('nccl' if dev.type == 'cuda' else 'gloo')
    info = json.loads((out / 'ddp_input.json').read_text())
    cfg = run_config(device, 1)
    ds = open_dataset(info['data'], 'train', patch=32, stride=32, augment=False)
    batch = collate_samples([ds[i] for i in range(4)])
    mods = tuple(s.name for s in ds.modalities)

    class Step(nn.Module):
        def __init__(self, m): super().__init__(); self.model = m
        def forward(self, inputs, av_t, av_s): return self.model.forward_train(inputs, av_t, av_s)

    def one_step(d, wrap):
        model = model_from_checkpoint(info['checkpoint'], device=d)[0].train()
        if d.type == 'cuda': model = model.to(memory_format=torch.channels_last)
        fmt = torch.channels_last if d.type == 'cuda' else torch.contiguous_format
        inputs = {m: v.to(d).contiguous(memory_format=fmt) for m, v in batch['inputs'].items()}
        av_t = batch['avail'].to(d)
        av_s = av_t & avail_from_missing(('ndsm',), mods).to(d)
        fwd = Step(model)
        if wrap: fwd = nn.parallel.DistributedDataParallel(fwd, device_ids=[d.index] if d.type == 'cuda' else None,
                                                            find_unused_parameters=True)
        torch.manual_seed(0)
        t, s = fwd(inputs, av_t, av_s)
        loss = compute_losses(s, batch['label'].to(d), t, cfg.train.loss, True, modalities=mods)['total']
        loss.backward()
        g = torch.cat([p.grad.detach().float().flatten().cpu() for p in model.parameters() if p.grad is not None])
        return loss.detach(), g

    l_ddp, g_ddp = one_step(dev, True)
    l_one, g_one = one_step(dev, False)
    l_cpu, _ = one_step(torch.device('cpu'), False)
    red = l_ddp.clone(); dist.all_reduce(red)
    res = dict(backend=dist.get_backend(), world=dist.get_world_size(), loss_ddp=l_ddp.item(), loss_plain=l_one.item(),
               loss_cpu=l_cpu.item(), loss_all_reduced=red.item(),
               grad_rel=((g_ddp - g_one).norm() / g_one.norm().clamp_min(1e-12)).item())
    (out / 'ddp_result.json').write_text(json.dumps(res))
    dist.destroy_process_group()
    return 0


# --- the parent ----------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(ROOT / 'runs' / 'gpu_check'))
    ap.add_argument('--device', default='cuda', choices=('cuda', 'cpu'))
    ap.add_argument('--steps', type=int, default=4)
    ap.add_argument('--ddp-child', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    out = Path(a.out)
    import torch
    if a.ddp_child: return ddp_child(out, a.device)
    if a.device == 'cuda' and not torch.cuda.is_available():
        why = 'torch was built without CUDA' if torch.version.cuda is None else 'no CUDA device is visible'
        print(f"gpu-check: SKIPPED — {why} (torch {torch.__version__}). Nothing was run; on a CUDA machine this trains "
              f"with AMP + channels-last, resumes, predicts a tile and runs a 1-process NCCL DDP step, compared with CPU.")
        return 0
    from dis2.synthetic import build_embedded, smoke_config
    from dis2.data import open_dataset
    from dis2.predict import predict_geotiff
    import numpy as np, rasterio
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    work = out / 'work'
    shutil.rmtree(work, ignore_errors=True); work.mkdir()
    amp = 'none' if a.device == 'cpu' else ('bf16' if torch.cuda.is_bf16_supported() else 'fp16')
    gpu = torch.cuda.get_device_name(0) if a.device == 'cuda' else platform.processor() or 'cpu'
    print(f"gpu-check on {gpu} · torch {torch.__version__} (CUDA {torch.version.cuda}) · amp {amp} · channels-last", flush=True)
    root = build_embedded(work / 'embedded', smoke_config(), progress=False)
    ds = open_dataset(root, 'train', patch=32, stride=32, augment=True)
    checks = []

    # 1. training with AMP + channels-last vs CPU fp32
    cpu = _train(run_config('cpu', a.steps), ds, work / 'cpu', 'cpu')
    dev = _train(run_config(a.device, a.steps, amp), ds, work / 'dev', a.device)
    sc, sd = step_losses(cpu.history), step_losses(dev.history)
    ec, ed = epoch_losses(cpu.history), epoch_losses(dev.history)
    on_dev = next(dev.model.parameters()).device.type
    cl = a.device != 'cuda' or any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                                   for p in dev.model.parameters())
    checks.append(check('train_amp', len(sd) == len(sc) == 2 * a.steps and on_dev == a.device and cl
                        and _rel(sd[0], sc[0]) <= TOL['first_loss_rel'] and _rel(ed[-1], ec[-1]) <= TOL['last_epoch_loss_rel']
                        and all(np.isfinite(sd)),
                        steps=len(sd), first_cpu=sc[0], first_dev=sd[0], first_rel=_rel(sd[0], sc[0]),
                        last_epoch_cpu=ec[-1], last_epoch_dev=ed[-1], last_epoch_rel=_rel(ed[-1], ec[-1]),
                        device=on_dev, channels_last=cl))

    # 2. stop after epoch 1, resume
    cfg = run_config(a.device, a.steps, amp)
    assert _train(cfg, ds, work / 'resumed', a.device, stop_after_epoch=1) is None
    res = _train(cfg, ds, work / 'resumed', a.device)
    sr = step_losses(res.history)
    worst = max((_rel(x, y) for x, y in zip(sr, sd)), default=float('inf'))
    checks.append(check('resume', len(sr) == len(sd) and worst <= TOL['resume_loss_rel'], steps=len(sr), worst_step_rel=worst))

    # 3. predict a test tile with the CPU checkpoint, on the device vs on the CPU
    test = open_dataset(root, 'test')
    stem = next(iter(test.tiles()))['id']
    tifs = {m.name: next((root / m.name).glob(f'{stem}*.tif')) for m in test.modalities}
    for given in (tuple(tifs), ('optical',)):
        got = {}
        for d in ('cpu', a.device):
            p = work / f"pred_{'+'.join(given)}_{d}_{len(got)}.tif"
            predict_geotiff(cpu.checkpoint, {m: tifs[m] for m in given}, p, window=32, probs_out=p.with_suffix('.probs.tif'),
                            probs_dtype='float32', device=d, progress=False, channels_last=d == 'cuda')
            with rasterio.open(p) as f: lab = f.read(1)
            with rasterio.open(p.with_suffix('.probs.tif')) as f: prob = f.read()
            got[len(got)] = (lab, prob)
        (l0, p0), (l1, p1) = got[0], got[1]
        diff, agree = float(np.abs(p0 - p1).max()), float((l0 == l1).mean())
        checks.append(check(f"predict[{'+'.join(given)}]", diff <= TOL['predict_prob_abs'] and agree >= TOL['predict_label_agree'],
                            max_prob_diff=diff, label_agreement=agree))

    # 4. one DDP step in one process under torchrun (NCCL on CUDA)
    (work / 'ddp_input.json').write_text(json.dumps({'data': str(root), 'checkpoint': str(cpu.checkpoint)}))
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1',
                        str(Path(__file__).resolve()), '--ddp-child', '--out', str(work), '--device', a.device],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    if r.returncode or not (work / 'ddp_result.json').exists():
        checks.append(check('ddp', False, returncode=r.returncode, stderr=r.stderr[-1500:]))
    else:
        d = json.loads((work / 'ddp_result.json').read_text())
        ok = (d['backend'] == ('nccl' if a.device == 'cuda' else 'gloo') and d['world'] == 1
              and _rel(d['loss_ddp'], d['loss_plain']) <= TOL['ddp_loss_rel'] and d['grad_rel'] <= TOL['ddp_grad_rel']
              and _rel(d['loss_all_reduced'], d['loss_ddp']) <= 1e-6 and _rel(d['loss_ddp'], d['loss_cpu']) <= TOL['ddp_vs_cpu_loss_rel'])
        checks.append(check('ddp', ok, backend=d['backend'], loss_ddp=d['loss_ddp'], loss_cpu=d['loss_cpu'],
                            ddp_vs_plain_rel=_rel(d['loss_ddp'], d['loss_plain']), grad_rel=d['grad_rel'],
                            ddp_vs_cpu_rel=_rel(d['loss_ddp'], d['loss_cpu'])))

    summary = dict(device=a.device, name=gpu, torch=torch.__version__, cuda=torch.version.cuda, amp=amp, steps=a.steps,
                   tolerances=TOL, checks=checks, ok=all(c['ok'] for c in checks), seconds=round(time.time() - t0, 1))
    (out / 'gpu_check.json').write_text(json.dumps(summary, indent=1))
    print(f"gpu-check: {'all passed' if summary['ok'] else 'FAILED'} in {summary['seconds']:.0f} s → {out / 'gpu_check.json'}")
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
