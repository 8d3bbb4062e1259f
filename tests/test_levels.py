"""The CPU levels: which one the import picks, and that every level the machine runs
gives the oracle's results, and, among the levels with FMA, the same bits.

Levels other than the one this process runs are tested in subprocesses with
$CCONV_CPU_CAPABILITY set (a module's level is fixed at import). The x86-64 `default`
level has no FMA instruction, so its last bits may differ from the FMA levels': it is
exempt from the bit-identity test, and still has to pass the op tests.

As a script, so that CI can also compare builds by different compilers:
    python tests/test_levels.py OUT.npz           the fingerprint (the op outputs and
                                                  gradients compared across levels)
    python tests/test_levels.py compare A.npz B.npz   fails if any array's bits differ
"""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cconv
from cconv._kernels import _levels
from conftest import same_cconv_env

TESTS = Path(__file__).resolve().parent
# What each level must pass: every op against the oracle, gradients against finite
# differences, fused steps against unfused ones (each with its same-bits-on-any-thread test).
LEVEL_TESTS = ("ops", "test_gradcheck.py", "test_fusion.py")
FMA_LEVELS = ("avx2", "avx512")  # x86-64 levels with FMA; aarch64's default has it too

X86 = "x86_64"
BASE = dict.fromkeys(("SSE3", "SSSE3", "SSE41", "SSE42", "POPCNT"), True)
AVX2 = dict(BASE, AVX=True, AVX2=True, FMA3=True)
AVX512 = dict(AVX2, AVX512F=True, AVX512BW=True, AVX512DQ=True, AVX512VL=True)
ALL_X86 = ["default", "avx2", "avx512"]


# ---- the choice, with made-up CPUs ----------------------------------------------------
@pytest.mark.parametrize("features, expected", [
    (BASE, ["default"]),
    (AVX2, ["default", "avx2"]),
    (AVX512, ALL_X86),
    (dict(AVX2, FMA3=False), ["default"]),               # AVX2 without FMA: no avx2 level
    (dict(AVX512, AVX512BW=False), ["default", "avx2"]),  # AVX512F alone is not enough
    (dict(AVX512, AVX2=False), ["default"]),             # a level needs those below it
    (dict(BASE, POPCNT=False), []),
])
def test_supported_levels_of_a_cpu(features, expected):
    assert _levels.supported(features, X86) == expected


def test_aarch64_has_one_level():
    assert _levels.supported({"ASIMD": True}, "aarch64") == ["default"]
    assert _levels.choose(["default"], None, {"ASIMD": True}, "aarch64") == "default"


@pytest.mark.parametrize("features, built, expected", [
    (AVX512, ALL_X86, "avx512"),
    (AVX2, ALL_X86, "avx2"),
    (BASE, ALL_X86, "default"),
    (AVX512, ["default", "avx2"], "avx2"),  # the best that is both supported and built
])
def test_best_level_is_chosen(features, built, expected):
    assert _levels.choose(built, "", features, X86) == expected


@pytest.mark.parametrize("requested", ["default", "avx2", " AVX2 ", "avx512"])
def test_forced_level_the_cpu_runs_is_used(requested, recwarn):
    assert _levels.choose(ALL_X86, requested, AVX512, X86) == requested.strip().lower()
    assert not recwarn.list


def test_forced_level_the_cpu_lacks_warns_and_uses_the_best():
    with pytest.warns(RuntimeWarning, match="avx512") as caught:
        assert _levels.choose(ALL_X86, "avx512", AVX2, X86) == "avx2"
    message = str(caught[0].message)
    assert "['default', 'avx2']" in message  # the levels this CPU has
    assert _levels.ENV in message


def test_forced_level_that_is_not_built_warns_and_uses_the_best():
    # e.g. a CCONV_LEVELS=default,avx2 build on an AVX-512 machine
    with pytest.warns(RuntimeWarning, match="avx512") as caught:
        assert _levels.choose(["default", "avx2"], "avx512", AVX512, X86) == "avx2"
    assert "built" in str(caught[0].message)


@pytest.mark.parametrize("requested", ["avx3", "sse", "native"])
def test_forced_name_that_is_no_level_warns_and_uses_the_best(requested):
    with pytest.warns(RuntimeWarning, match=requested) as caught:
        assert _levels.choose(ALL_X86, requested, AVX2, X86) == "avx2"
    assert all(name in str(caught[0].message) for name in ALL_X86)


def test_cpu_without_the_default_level_cannot_import():
    old_cpu = dict(BASE, SSE42=False, POPCNT=False)
    with pytest.raises(ImportError) as caught:
        _levels.choose(ALL_X86, "", old_cpu, X86)
    message = str(caught.value)
    assert "default" in message and "SSE42" in message and "POPCNT" in message


def test_no_built_level_says_how_to_build():
    with pytest.raises(ImportError, match="pip install"):
        _levels.choose([], "", AVX512, X86)


# ---- the level of this process -------------------------------------------------------
def _numpy_features():
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def _best_level_by_numpy():
    """Written out again here, from numpy's feature names, rather than taken from
    _levels: what the import should pick on this CPU."""
    has = _numpy_features()
    if _levels.architecture() != X86:
        return "default"
    if all(has.get(f) for f in ("AVX512F", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX2",
                                "FMA3")):
        return "avx512"
    if all(has.get(f) for f in ("AVX", "AVX2", "FMA3")):
        return "avx2"
    return "default"


def _supported_and_built():
    return [name for name in _levels.supported() if name in cconv._kernels.BUILT]


def test_cpu_capability_is_the_best_level_the_cpu_runs():
    if _levels.requested().strip():
        pytest.skip(f"{_levels.ENV} is set: the level was forced")
    best = _best_level_by_numpy()
    if best not in cconv._kernels.BUILT:
        pytest.skip(f"this build lacks the {best} level (built: {cconv._kernels.BUILT})")
    assert cconv.cpu_capability() == best


def test_show_config_prints_the_level_and_the_supported_ones():
    out = io.StringIO()
    cconv.show_config(file=out)
    line = next(line for line in out.getvalue().splitlines() if "cpu level" in line)
    assert cconv.cpu_capability() in line
    assert all(name in line for name in _levels.supported())


# ---- every other level, in subprocesses ----------------------------------------------
def _run_at(level, args, cwd, timeout=1800):
    """`python args...` with $CCONV_CPU_CAPABILITY=level, importing the cconv this
    process imported (the installed one in CI), from `cwd`, an empty folder: from the
    checkout, `python -m` would import the sources first."""
    return subprocess.run([sys.executable, *args], env=same_cconv_env(CCONV_CPU_CAPABILITY=level),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _other_levels():
    """Levels the CPU runs and this build has, except this process's (the main run of
    the suite covers it)."""
    return [name for name in _supported_and_built() if name != cconv.cpu_capability()]


def _levels_param(names):
    return pytest.mark.parametrize("level", names or [
        pytest.param(None, marks=pytest.mark.skip(reason="no other level to run here"))])


@_levels_param(_supported_and_built())
def test_forced_level_is_reported(level, tmp_path):
    run = _run_at(level, ["-W", "error::RuntimeWarning", "-c",
                          "import cconv; print(cconv.cpu_capability())"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == level


@_levels_param(_other_levels())
def test_op_tests_pass_at_level(level, tmp_path):
    run = _run_at(level, ["-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(TESTS.parent), *(str(TESTS / t) for t in LEVEL_TESTS)],
                  tmp_path)
    tail = "\n".join(run.stdout.splitlines()[-40:])
    assert run.returncode == 0, f"op tests at {level}:\n{tail}\n{run.stderr[-2000:]}"


# ---- the same bits at every FMA level -------------------------------------------------
def _conv_case(out, key, rng, dtype, shape, kernel, padding):
    from cconv import ops

    x = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal(kernel) / np.sqrt(np.prod(kernel[:3]))).astype(dtype)
    b = rng.standard_normal(kernel[3]).astype(dtype)
    y = ops.conv2d(x, w, b, padding=padding, activation="tanh")
    g = rng.standard_normal(y.shape).astype(dtype)
    out[key] = y
    out[key + "/grad_x"], out[key + "/grad_w"], out[key + "/grad_b"] = \
        ops.conv2d_backward(x, w, g, padding=padding)


def _activation_cases(out, name, dtype):
    """Every elementwise activation of the table, forward and backward, on a wide range
    with the edges (zeros, subnormals, huge values, infinities, NaN), a length that
    leaves a tail after the last full vector at every width. Its own generator, so that
    the other cases' inputs do not depend on the table's length."""
    from cconv import activations, ops

    rng = np.random.default_rng(11)
    info = np.finfo(dtype)
    edges = np.array([0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal,
                      info.tiny / 3, -info.tiny / 3, 1e4, -1e4, info.max, -info.max,
                      np.inf, -np.inf, np.nan], dtype)
    x = np.concatenate([rng.standard_normal(1000).astype(dtype) * 8,
                        rng.uniform(-120, 120, 200).astype(dtype), edges])
    g = rng.standard_normal(x.shape).astype(dtype)
    with np.errstate(all="ignore"):
        for act in activations.ELEMENTWISE:
            y = ops.activation(act, x)
            out[f"{name}/act/{act}"] = y
            s = x if ops.gradient_from(act) == "input" else y
            out[f"{name}/act/{act}/backward"] = ops.activation_backward(act, s, g)


def fingerprint():
    """Outputs and gradients of the ops, and of a short fit, on fixed inputs: arrays
    whose bits must be the same at every level with FMA."""
    from cconv import ops, presets

    out = {}
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(7)
        name = np.dtype(dtype).name
        for padding in ("valid", "same"):
            _conv_case(out, f"{name}/conv_c1/{padding}", rng, dtype, (3, 13, 11, 1),
                       (3, 3, 1, 16), padding)
            _conv_case(out, f"{name}/conv_c3/{padding}", rng, dtype, (3, 12, 10, 3),
                       (3, 3, 3, 16), padding)
            _conv_case(out, f"{name}/winograd/{padding}", rng, dtype, (2, 12, 12, 8),
                       (5, 5, 8, 16), padding)
        # Partial GEMM tiles and panels at every level: rows past 6- and 12-row tiles,
        # columns past 8-, 16- and 32-wide panels.
        _conv_case(out, f"{name}/conv_c5_f19", rng, dtype, (3, 11, 9, 5), (3, 3, 5, 19), "same")
        _conv_case(out, f"{name}/winograd_c20_f37", rng, dtype, (3, 13, 11, 20),
                   (5, 5, 20, 37), "same")
        for rows, depth, units in ((9, 70, 10), (9, 70, 64), (45, 300, 70), (230, 90, 37)):
            x = rng.standard_normal((rows, depth)).astype(dtype)
            w = rng.standard_normal((depth, units)).astype(dtype)
            b = rng.standard_normal(units).astype(dtype)
            y = ops.dense(x, w, b)
            key = f"{name}/dense{rows}x{depth}x{units}"
            out[key] = y
            out[key + "/grad_x"], out[key + "/grad_w"], out[key + "/grad_b"] = \
                ops.dense_backward(x, w, rng.standard_normal(y.shape).astype(dtype))
        x = rng.standard_normal((3, 14, 14, 1)).astype(dtype)
        w = rng.standard_normal((3, 3, 1, 16)).astype(dtype)
        b = rng.standard_normal(16).astype(dtype)
        for c, xc in ((1, x), (3, rng.standard_normal((3, 14, 14, 3)).astype(dtype))):
            wc = rng.standard_normal((3, 3, c, 16)).astype(dtype)
            out[f"{name}/conv2d_maxpool_c{c}"], out[f"{name}/conv2d_maxpool_c{c}/argmax"] = \
                ops.conv2d_maxpool(xc, wc, b, activation="relu", need_argmax=True)
        dense_w = rng.standard_normal((12 * 12 * 16, 10)).astype(dtype)
        out[f"{name}/conv2d_dense"] = ops.conv2d_dense(x, w, b, dense_w, b[:10],
                                                       activation="tanh")
        a = rng.standard_normal((5, 300)).astype(dtype) * 3
        g = rng.standard_normal(a.shape).astype(dtype)
        out[f"{name}/tanh"] = t = ops.tanh(a)
        out[f"{name}/tanh_backward"] = ops.tanh_backward(t, g)
        out[f"{name}/relu"] = r = ops.relu(a)
        out[f"{name}/relu_backward"] = ops.relu_backward(r, g)
        _activation_cases(out, name, dtype)
        out[f"{name}/dropout"], mask = ops.dropout(a, 0.5, seed=3)
        out[f"{name}/dropout_backward"] = ops.dropout_backward(g, mask, 0.5)
        p = rng.standard_normal((2, 9, 8, 5)).astype(dtype)
        pooled, argmax = ops.max_pool2d(p, 2, padding="same")
        out[f"{name}/max_pool2d"] = pooled
        out[f"{name}/max_pool2d_backward"] = ops.max_pool2d_backward(
            rng.standard_normal(pooled.shape).astype(dtype), argmax, p.shape, 2, "same")
        param, m, v = (rng.standard_normal(1000).astype(dtype) for _ in range(3))
        v = np.abs(v)
        for step in (1, 2):
            ops.adam_update(param, rng.standard_normal(1000).astype(dtype), m, v, step)
        out[f"{name}/adam"], out[f"{name}/adam/m"], out[f"{name}/adam/v"] = param, m, v
        out.update(_fit(name, presets))
    return out


def _fit(name, presets):
    """Two epochs of the chapter-10 network on fixed random images, seed 1."""
    rng = np.random.default_rng(11)
    x = rng.random((256, 28, 28, 1))
    y = rng.integers(0, 10, 256)
    cconv.utils.set_random_seed(1)
    model = presets.build_fixed(name)
    history = model.fit(x, y, batch_size=presets.BATCH_SIZE, epochs=2, verbose=0)
    out = {f"{name}/fit/weight{i}": w for i, w in enumerate(model.get_weights())}
    out[f"{name}/fit/loss"] = np.array(history.history["loss"])
    return out


def _load(path):
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def _fingerprint_at(level, path):
    run = _run_at(level, [__file__, str(path)], path.parent)
    assert run.returncode == 0, f"fingerprint at {level}:\n{run.stderr[-3000:]}"
    return _load(path)


def different_bits(a, b):
    """Names of the arrays whose bytes differ between two fingerprints."""
    assert a.keys() == b.keys()
    return sorted(key for key in a if a[key].dtype != b[key].dtype
                  or a[key].shape != b[key].shape or a[key].tobytes() != b[key].tobytes())


def test_fma_levels_give_the_same_bits(tmp_path):
    """avx2 and avx512 (the default level has no FMA and is exempt)."""
    runnable = _supported_and_built()
    missing = [name for name in FMA_LEVELS if name not in runnable]
    if missing:
        pytest.skip(f"needs the levels {missing}, which this CPU or build lacks")
    prints = {level: _fingerprint_at(level, tmp_path / f"{level}.npz") for level in FMA_LEVELS}
    differ = different_bits(*prints.values())
    assert not differ, f"{len(differ)} of {len(prints['avx2'])} arrays differ between " \
                       f"avx2 and avx512: {differ}"


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        differ = different_bits(_load(sys.argv[2]), _load(sys.argv[3]))
        print(f"{len(differ)} arrays differ: {differ}" if differ else "same bits")
        sys.exit(1 if differ else 0)
    np.savez(sys.argv[1], **fingerprint())
