"""`make gpu-check` (tools/gpu_check.py) skips cleanly, with a reason, where no CUDA device is visible.

The GPU path itself runs only on a CUDA machine (`make gpu-check`); `python tools/gpu_check.py --device cpu`
runs the same checks on the CPU (~1 min on 2 cores, not part of the suite) to exercise the script's logic.
"""
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_skips_without_cuda(tmp_path):
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'gpu_check.py'), '--out', str(out)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})   # hides any GPU
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith('gpu-check: SKIPPED — ') and ('without CUDA' in r.stdout or 'no CUDA device' in r.stdout), r.stdout
    assert not out.exists()                                   # nothing was run or written


def test_gpu_check_is_a_make_target():
    mk = (ROOT / 'Makefile').read_text()
    assert 'gpu-check:' in mk and 'tools/gpu_check.py' in mk.split('gpu-check:', 1)[1].split('\n\n', 1)[0]
