#!/usr/bin/env bash
# Run the INSTALLED cconv on emulated x86-64 CPUs older than this one: qemu-x86_64
# -cpu Nehalem (SSE4.2, no AVX: must pick `default`) and -cpu Haswell (AVX2 + FMA: must
# pick `avx2`). Each checks the level picked and a handful of ops against the oracle,
# then a short fit against the same fit run natively at that level. Any signal (an
# illegal instruction in the level's code or in its module's initialisation) fails.
#
#   tools/qemu_check.sh [python]     (default: the python on PATH, e.g. a venv's)
#
# Needs qemu-user (Debian: apt-get install qemu-user). numpy >= 2 needs x86-64-v2,
# which Nehalem has. qemu runs the whole interpreter emulated: this takes a minute or two.
set -euo pipefail

python=${1:-python}
work=$(mktemp -d "${TMPDIR:-/tmp}/cconv-qemu-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"   # no cconv sources on sys.path: the installed package is checked

cat >check.py <<'EOF'
import sys

import numpy as np

import cconv
from cconv import activations, ops, oracle, presets

expected, out = sys.argv[1], sys.argv[2]
assert cconv.cpu_capability() == expected, (cconv.cpu_capability(), expected)
rng = np.random.default_rng(0)


def close(name, got, want):
    tol = 2e-4 if got.dtype == np.float32 else 1e-10
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=name)


for dtype in (np.float32, np.float64):
    a = (rng.standard_normal(5000) * 4).astype(dtype)
    close("tanh", ops.tanh(a), np.tanh(a.astype(np.float64)).astype(dtype))
    g = rng.standard_normal(a.shape).astype(dtype)
    for name in activations.ELEMENTWISE:  # every activation's SIMD code at this level
        act = ops.activation(name, a)
        close(name, act, oracle.activation(name, a))
        s = act if activations.row(name).gradient_from == "output" else a
        close(name + " backward", ops.activation_backward(name, s, g),
              oracle.activation_backward(name, s, g))
    for shape, kernel in (((2, 14, 14, 1), (3, 3, 1, 16)),    # direct single-channel
                          ((2, 12, 12, 3), (3, 3, 3, 16)),    # GEMM
                          ((2, 12, 12, 8), (5, 5, 8, 16)),    # Winograd F(2x2, 5x5)
                          ((2, 12, 12, 8), (3, 3, 8, 16))):   # Winograd F(4x4, 3x3)
        x = rng.standard_normal(shape).astype(dtype)
        w = (rng.standard_normal(kernel) / np.sqrt(np.prod(kernel[:3]))).astype(dtype)
        b = rng.standard_normal(kernel[3]).astype(dtype)
        for padding in ("valid", "same"):
            name = f"conv2d {kernel} {padding} {np.dtype(dtype).name}"
            y = ops.conv2d(x, w, b, padding=padding, activation="tanh")
            close(name, y, np.tanh(oracle.conv2d(x, w, b, padding=padding)))
            g = rng.standard_normal(y.shape).astype(dtype)
            for got, want in zip(ops.conv2d_backward(x, w, g, padding=padding),
                                 oracle.conv2d_backward(x, w, g, padding=padding)):
                close(name + " backward", got, want)
    # the fused single-channel conv -> dense of a test pass
    x = rng.standard_normal((9, 12, 12, 1)).astype(dtype)
    w = (rng.standard_normal((3, 3, 1, 16)) / 3).astype(dtype)
    dense_w = (rng.standard_normal((10 * 10 * 16, 10)) / 40).astype(dtype)
    close("conv2d_dense", ops.conv2d_dense(x, w, None, dense_w, None, "valid", "tanh"),
          oracle.conv2d_dense(x, w, None, dense_w, None, "valid", "tanh"))
    # dropout's branch-free select, forward and backward
    kept, mask = ops.dropout(a, 0.3, seed=5)
    want, want_mask = oracle.dropout(a, 0.3, seed=5)
    assert np.array_equal(mask, want_mask), "dropout mask"
    close("dropout", kept, want)
    ga = rng.standard_normal(a.shape).astype(dtype)
    close("dropout_backward", ops.dropout_backward(ga, mask, 0.3),
          oracle.dropout_backward(ga, mask, 0.3))
    for units in (10, 64):
        x = rng.standard_normal((9, 70)).astype(dtype)
        w = rng.standard_normal((70, units)).astype(dtype)
        close(f"dense {units}", ops.dense(x, w), oracle.dense(x, w))
    p = rng.standard_normal((2, 9, 8, 5)).astype(dtype)
    close("max_pool2d", ops.max_pool2d(p, 2)[0], oracle.max_pool2d(p, 2)[0])
    for how in (dict(strides=1), dict(strides=2, padding="same")):  # the window kernels
        close(f"max_pool2d 3 {how}", ops.max_pool2d(p, 3, **how)[0],
              oracle.max_pool2d(p, 3, **how)[0])
        close(f"avg_pool2d 3 {how}", ops.avg_pool2d(p, 3, **how), oracle.avg_pool2d(p, 3, **how))
    # the strided route (_im2col, then _gemm), forward and backward
    x = rng.standard_normal((2, 11, 10, 3)).astype(dtype)
    w = (rng.standard_normal((3, 3, 3, 8)) / 5).astype(dtype)
    for how in (dict(strides=2, padding="same"), dict(dilation_rate=2)):
        y = ops.conv2d(x, w, **how)
        close(f"conv2d {how}", y, oracle.conv2d(x, w, **how))
        g = rng.standard_normal(y.shape).astype(dtype)
        for got, want in zip(ops.conv2d_backward(x, w, g, **how),
                             oracle.conv2d_backward(x, w, g, **how)):
            close(f"conv2d backward {how}", got, want)
    close("batch_norm", ops.batch_norm(p)[0], oracle.batch_norm(p)[0])
    close("relu_general", ops.relu_general(a, 0.1, 2.0, 0.5),
          oracle.relu_general(a, 0.1, 2.0, 0.5))
    close("elu", ops.elu(a, 0.5), oracle.elu(a, 0.5))
    grad = rng.standard_normal(1000).astype(dtype)
    for update, options, slots in (("sgd_update", dict(momentum=0.9, nesterov=True),
                                    ("momentums",)),
                                   ("rmsprop_update", dict(momentum=0.5, centered=True),
                                    ("velocity", "momentums", "average_gradient"))):
        # velocity above average_gradient**2: centered RMSprop's root stays real
        start = [(rng.random(1000) + (name == "velocity")).astype(dtype)
                 for name in ("param",) + slots]
        twins = []
        for module in (ops, oracle):  # each updates its own copies in place
            arrays = [a.copy() for a in start]
            getattr(module, update)(arrays[0], grad, **dict(zip(slots, arrays[1:])),
                                    **options)
            twins.append(arrays)
        for got, want in zip(*twins):
            close(update, got, want)
    # the merge kernels: three inputs with ties, forward and the mixing gradients
    xs = [rng.standard_normal(5000).astype(dtype) for _ in range(3)]
    xs[1][::5] = xs[0][::5]
    for name in ("add", "multiply", "average", "maximum"):
        close(name, getattr(ops, name)(xs), getattr(oracle, name)(xs))
    close("subtract", ops.subtract(xs[0], xs[1]), oracle.subtract(xs[0], xs[1]))
    for name in ("multiply_backward", "maximum_backward"):
        for got, want in zip(getattr(ops, name)(xs, a), getattr(oracle, name)(xs, a)):
            close(name, got, want)

x = np.random.default_rng(1).random((256, 28, 28, 1))
y = np.random.default_rng(2).integers(0, 10, 256)
cconv.utils.set_random_seed(1)
model = presets.build_fixed("float32")
loss = model.fit(x, y, batch_size=presets.BATCH_SIZE, epochs=1, verbose=0).history["loss"]
assert np.isfinite(loss).all(), loss
np.savez(out, *model.get_weights())
print(f"{expected}: ops agree with the oracle; fit loss {loss[0]:.6f}")
EOF

compare() {  # the emulated fit against the native one, to float32 rounding
    "$python" -c "import sys, numpy as np; a, b = np.load(sys.argv[1]), np.load(sys.argv[2]); \
[np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-5, err_msg=k) for k in a.files]" "$@"
}

for pair in Nehalem:default Haswell:avx2; do
    cpu=${pair%%:*} level=${pair#*:}
    start=$SECONDS
    # TCG warns about CPUID bits it does not emulate (tsc-deadline, hle, ...): harmless.
    # Where the host forces OpenBLAS's kernels to its own CPU (OPENBLAS_CORETYPE, set on
    # some machines here), numpy's import would run them on the emulated, older CPU:
    # name the emulated one instead, for the emulated process only.
    ${OPENBLAS_CORETYPE:+env OPENBLAS_CORETYPE=$cpu} \
    qemu-x86_64 -cpu "$cpu" "$(command -v "$python")" check.py "$level" "emulated-$cpu.npz" \
        2> >(grep -v "TCG doesn't support requested feature" >&2)
    CCONV_CPU_CAPABILITY=$level "$python" check.py "$level" "native-$cpu.npz" >/dev/null
    compare "emulated-$cpu.npz" "native-$cpu.npz"
    echo "qemu -cpu $cpu: OK ($((SECONDS - start)) s)"
done
