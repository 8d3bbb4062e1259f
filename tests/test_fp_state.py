"""cconv leaves the floating-point state alone: subnormals survive after it is imported
and its kernels run, in numpy and in the kernels' own results.

A library linked with gcc -ffast-math (or -Ofast) pulls in crtfastmath.o, which turns on
flush-to-zero and denormals-are-zero (FTZ/DAZ) when the library loads, for the whole
process; setup.py strips those flags, even from $CFLAGS and $LDFLAGS. Each check runs in
a fresh interpreter, so that the import itself is what is tested.
"""
import subprocess
import sys
import textwrap

import pytest

from conftest import same_cconv_env

CHECK = textwrap.dedent("""
    import numpy as np
    import cconv
    from cconv import ops

    def numpy_keeps_subnormals():
        assert np.float32(1e-39) * np.float32(1) != 0, "float32 subnormal flushed to zero"
        assert np.float64(1e-310) * np.float64(1) != 0, "float64 subnormal flushed to zero"
        assert np.float32(1e-39) > 0, "float32 subnormal read as zero"
        assert np.float64(1e-310) > 0, "float64 subnormal read as zero"

    numpy_keeps_subnormals()
    cconv.set_num_threads(2)
    for dtype, tiny in ((np.float32, 1e-39), (np.float64, 1e-310)):
        x = np.full(1000, tiny, dtype)
        assert np.array_equal(ops.tanh(x), x), f"{dtype.__name__} tanh of subnormals"
        assert np.array_equal(ops.relu(x), x), f"{dtype.__name__} relu of subnormals"
        # normal inputs whose products are subnormal: 1x1 kernel, 2e-20 * 1e-19 or 1e-150 * 1e-160
        a, b = (2e-20, 1e-19) if dtype is np.float32 else (1e-150, 1e-160)
        images = np.full((2, 8, 8, 1), a, dtype)
        kernel = np.full((1, 1, 1, 16), b, dtype)
        y = ops.conv2d(images, kernel, activation="tanh")
        assert np.all(y > 0) and np.all(y == dtype(a) * dtype(b)), f"{dtype.__name__} conv2d"
    numpy_keeps_subnormals()
    print("ok")
""")


def test_subnormals_survive_import_and_kernels(tmp_path):
    # from an empty folder: from the checkout, `python -c` would import the sources
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=same_cconv_env())
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_subnormals_survive_in_this_process(dtype):
    # the suite's own process, after everything the other tests ran
    import numpy as np

    tiny = np.dtype(dtype).type(1e-39 if dtype == "float32" else 1e-310)
    assert tiny * np.dtype(dtype).type(1) != 0
