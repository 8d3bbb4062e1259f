"""The strided routes give the same bits at every CPU level with FMA, as
tests/test_levels.py checks the other ops (the op tests themselves, tests/ops/
test_strided.py, run at every level there): strided and dilated conv2d forward and
backward (_im2col, _gemm), max_pool2d with other strides and avg_pool2d (_pool's window
kernels), each level in a subprocess with $CCONV_CPU_CAPABILITY set.

As a script: python tests/test_strided_levels.py OUT.npz writes the fingerprint."""
import sys

import numpy as np
import pytest

from test_levels import FMA_LEVELS, _load, _run_at, _supported_and_built, different_bits


def fingerprint():
    """Outputs and gradients of the strided routes on fixed inputs, both dtypes: shapes
    with partial GEMM tiles and panels, one and several channels, 'same' padding's odd
    pixel, a channel count past a SIMD vector for the pools' runs of adds."""
    from cconv import ops

    out = {}
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        rng = np.random.default_rng(5)
        for label, shape, kernel, steps in (
                ("c1_s2", (3, 13, 11, 1), (3, 3, 1, 16), dict(strides=2)),
                ("c5_s3x2_f19", (3, 14, 9, 5), (4, 3, 5, 19), dict(strides=(3, 2))),
                ("c3_d2", (2, 12, 10, 3), (3, 3, 3, 37), dict(dilation_rate=2))):
            x = rng.standard_normal(shape).astype(dtype)
            w = (rng.standard_normal(kernel) / np.sqrt(np.prod(kernel[:3]))).astype(dtype)
            b = rng.standard_normal(kernel[3]).astype(dtype)
            key = f"{name}/conv_{label}"
            out[key] = y = ops.conv2d(x, w, b, "same", "tanh", **steps)
            g = rng.standard_normal(y.shape).astype(dtype)
            out[key + "/grad_x"], out[key + "/grad_w"], out[key + "/grad_b"] = \
                ops.conv2d_backward(x, w, g, "same", **steps)
        p = rng.standard_normal((3, 11, 10, 21)).astype(dtype)
        y, argmax = ops.max_pool2d(p, 3, "same", strides=2)
        g = rng.standard_normal(y.shape).astype(dtype)
        out[f"{name}/max_pool"], out[f"{name}/max_pool/argmax"] = y, argmax
        out[f"{name}/max_pool/backward"] = ops.max_pool2d_backward(g, argmax, p.shape, 3,
                                                                   "same", strides=2)
        out[f"{name}/avg_pool"] = ops.avg_pool2d(p, 3, "same", strides=2)
        out[f"{name}/avg_pool/backward"] = ops.avg_pool2d_backward(g, p.shape, 3, "same",
                                                                   strides=2)
    return out


def test_fma_levels_give_the_same_bits(tmp_path):
    runnable = _supported_and_built()
    missing = [name for name in FMA_LEVELS if name not in runnable]
    if missing:
        pytest.skip(f"needs the levels {missing}, which this CPU or build lacks")
    prints = {}
    for level in FMA_LEVELS:
        path = tmp_path / f"{level}.npz"
        run = _run_at(level, [__file__, str(path)], tmp_path)
        assert run.returncode == 0, f"fingerprint at {level}:\n{run.stderr[-3000:]}"
        prints[level] = _load(path)
    differ = different_bits(*prints.values())
    assert not differ, f"{len(differ)} arrays differ between avx2 and avx512: {differ}"


if __name__ == "__main__":
    np.savez(sys.argv[1], **fingerprint())
