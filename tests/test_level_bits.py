"""The same bits at every CPU level with FMA: the GEMM and Winograd kernels run tiles of
another shape at each level (6 x 2 vectors of 8 float32 at avx2, 12 x 2 vectors of 16
at avx512), but every output element is one chain of FMAs in the same order. Each level
runs in its own process ($CCONV_CPU_CAPABILITY is read at import); their outputs must
be equal byte for byte."""
import os
import subprocess
import sys

import numpy as np
import pytest

from cconv._kernels import BUILT, _levels

FMA_LEVELS = [name for name in ("avx2", "avx512")
              if name in BUILT and name in _levels.supported()]

# Every path of _gemm and _winograd, at shapes with partial tiles and panels at both
# levels: rows past a 6- and a 12-row tile, columns past 8-, 16- and 32-wide panels.
SCRIPT = r"""
import sys
import numpy as np
from cconv import ops

out = {}
for dtype in (np.float32, np.float64):
    rng = np.random.default_rng(7)
    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)
    name = np.dtype(dtype).name
    x, w, b = normal(45, 300), normal(300, 70), normal(70)
    out[name + " dense"] = ops.dense(x, w, b)
    out[name + " dense tall"] = ops.dense(normal(230, 90), normal(90, 37), normal(37))
    for i, a in enumerate(ops.dense_backward(x, w, normal(45, 70))):
        out[f"{name} dense backward {i}"] = a
    x, w, b = normal(3, 11, 9, 5), normal(3, 3, 5, 19), normal(19)
    out[name + " conv"] = ops.conv2d(x, w, b, "same", "tanh")
    g = normal(3, 11, 9, 19)
    for i, a in enumerate(ops.conv2d_backward(x, w, g, "same")):
        out[f"{name} conv backward {i}"] = a
    pooled, argmax = ops.conv2d_maxpool(x, w, b, "valid", "relu", (2, 2), need_argmax=True)
    out[name + " conv+pool"], out[name + " conv+pool argmax"] = pooled, argmax
    x, w, b = normal(3, 13, 11, 20), normal(5, 5, 20, 37), normal(37)
    out[name + " winograd"] = ops.conv2d(x, w, b, "same", "relu")
    for i, a in enumerate(ops.conv2d_backward(x, w, normal(3, 13, 11, 37), "same")):
        out[f"{name} winograd backward {i}"] = a
np.savez(sys.argv[1], **out)
"""


def run_at(level, path):
    env = dict(os.environ, CCONV_CPU_CAPABILITY=level, OMP_NUM_THREADS="2")
    subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, check=True)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.skipif(len(FMA_LEVELS) < 2, reason="needs two built FMA levels this CPU runs")
def test_same_bits_at_avx2_and_avx512(tmp_path):
    results = [run_at(level, tmp_path / f"{level}.npz") for level in FMA_LEVELS]
    first, second = results
    assert first.keys() == second.keys()
    differ = [k for k in first if first[k].tobytes() != second[k].tobytes()]
    assert not differ, f"{FMA_LEVELS} give different bits for {differ}"
