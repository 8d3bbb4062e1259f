"""Seconds per epoch of the chapter-10 network: cconv at each CPU level against an old
build, PyTorch, Keras 3 on TensorFlow and Keras 3 on JAX, on the CPU.

    conv 3x3x16 tanh, dropout 0.5, flatten, dense 10 softmax; SGD 2/128

One epoch = 7 training batches of 128 images (forward, backward, SGD step) plus a test
pass over 10,000 images. Each row runs in its own process (see _harness.py), with the
same threads and random images in [0, 1) (speed does not depend on pixel values).
Measures, seconds per epoch, medians over --repeats epochs after a warm-up epoch:
  epoch       test pass in batches of --test-batch (500), each framework at its fastest
              (PyTorch: a plain loop, inference_mode, channels-first: channels-last
              measured 1.1x slower here; Keras: train_on_batch, then evaluate, on JAX
              jit-compiled)
  epoch@32    as users write it: the test pass is evaluate(x, y) at the default batch
              size 32 (PyTorch: a DataLoader(batch_size=32) loop computing loss and
              accuracy)
  f64 epoch   cconv in float64 (cconv rows only)
GFLOP/s and percent of peak follow the table (see _harness.py; FLOPs by flops.py: 5.04
GFLOP an epoch), f64 epoch against the float64 peaks.
--oracle adds cconv.oracle (plain NumPy, float32) as a row: slow, epoch only.
--busy N times every row again beside N busy processes and prints the slowdowns.
cconv rows with --threads equal to the visible cores run as users run cconv: with its
default thread count, which adapts while other processes hold cores.
Targets (issue 13): epoch@32 >= 10x Keras's epoch@32 and >= 10x PyTorch's epoch; beside
1 (2) busy processes epoch@32 at most 2x (3x) slower, no run past 6x.

    python benchmarks/bench_ch10.py [--repeats 5] [--capability all] [--old DIR] [--busy N] [--quick]
"""
import numpy as np

import _harness
import flops
from _harness import Measure

TRAIN_BATCHES, BATCH, TEST_IMAGES, USER_BATCH, LR = 7, 128, 10_000, 32, 2.0 / 128
# busy processes -> (median slowdown, worst run's slowdown) that the epoch may reach
BUSY_GOALS = {1: (2.0, 6.0), 2: (3.0, 6.0)}


def data(spec, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.random((TRAIN_BATCHES * BATCH, 28, 28, 1), dtype=np.float32).astype(dtype)
    xs = rng.random((spec["test_images"], 28, 28, 1), dtype=np.float32).astype(dtype)
    return x, rng.integers(0, 10, len(x)), xs, rng.integers(0, 10, len(xs))


def cconv_measures(spec):
    cconv, info = _harness.import_cconv(spec)
    from cconv.layers import Conv2D, Dense, Dropout, Flatten, Input

    def epoch_fn(dtype, test_batch):
        x, y, xs, ys = data(spec, dtype)
        cconv.utils.set_random_seed(0)
        model = cconv.Sequential([Input((28, 28, 1)), Conv2D(16, 3, activation="tanh"),
                                  Dropout(0.5), Flatten(), Dense(10, activation="softmax")],
                                 dtype=dtype)
        model.compile(optimizer=cconv.optimizers.SGD(LR),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.build()
        count = flops.count(model)

        def epoch():
            model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
            model.evaluate(xs, ys, batch_size=test_batch)
        return epoch, len(x) * count.training + len(xs) * count.forward
    fns = {"epoch": epoch_fn("float32", spec["test_batch"]),
           "epoch@32": epoch_fn("float32", USER_BATCH),
           "f64 epoch": epoch_fn("float64", spec["test_batch"])}
    info["flop"] = {key: flop for key, (_, flop) in fns.items()}
    return info, {key: fn for key, (fn, _) in fns.items()}


def torch_measures(spec):
    torch, info = _harness.import_torch(spec)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.Tanh(), torch.nn.Dropout(0.5),
                              torch.nn.Flatten(), torch.nn.Linear(26 * 26 * 16, 10))
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    # PyTorch's native layout is channels-first; give it that, not a transposed view.
    x, y, xs, ys = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))
                                     if a.ndim == 4 else a.astype(np.int64)) for a in data(spec))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys),
                                         batch_size=USER_BATCH)

    def train():
        net.train()
        for i in range(0, len(x), BATCH):
            opt.zero_grad()
            loss_fn(net(x[i:i + BATCH]), y[i:i + BATCH]).backward()
            opt.step()

    def evaluate(batches):
        net.eval()
        with torch.inference_mode():
            for xb, yb in batches:
                out = net(xb)
                loss_fn(out, yb), (out.argmax(dim=1) == yb).sum()  # as evaluate does

    def epoch():
        train()
        b = spec["test_batch"]
        evaluate((xs[s:s + b], ys[s:s + b]) for s in range(0, len(xs), b))

    def epoch32():
        train()
        evaluate(loader)
    return info, {"epoch": epoch, "epoch@32": epoch32}


def keras_measures(spec):
    keras, _, info = _harness.import_keras(spec)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, activation="tanh"),
                              keras.layers.Dropout(0.5), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    _harness.keras_compile(keras, model, optimizer=keras.optimizers.SGD(LR),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y, xs, ys = data(spec)
    tensor = keras.ops.convert_to_tensor
    batches = [(tensor(x[i:i + BATCH]), tensor(y[i:i + BATCH]))
               for i in range(0, len(x), BATCH)]

    def epoch_fn(test_batch):
        def epoch():
            for xb, yb in batches:
                model.train_on_batch(xb, yb)
            model.evaluate(xs, ys, batch_size=test_batch, verbose=0)
        return epoch
    return info, {"epoch": epoch_fn(spec["test_batch"]), "epoch@32": epoch_fn(None)}


def oracle_measures(spec):
    """The same network written directly with cconv.oracle (plain NumPy)."""
    from cconv import oracle
    x, y, xs, _ = data(spec)
    rng = np.random.default_rng(0)
    kernels = rng.uniform(-0.3, 0.3, (3, 3, 1, 16)).astype(np.float32)
    bias = np.zeros(16, np.float32)
    dense_w = rng.uniform(-0.02, 0.02, (26 * 26 * 16, 10)).astype(np.float32)
    dense_b = np.zeros(10, np.float32)
    onehot = np.eye(10, dtype=np.float32)[y]

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def epoch():
        nonlocal kernels, bias, dense_w, dense_b
        for i in range(TRAIN_BATCHES):
            xb, yb = x[i * BATCH:(i + 1) * BATCH], onehot[i * BATCH:(i + 1) * BATCH]
            h = oracle.tanh(oracle.conv2d(xb, kernels, bias))
            d, mask = oracle.dropout(h, 0.5, seed=i)
            p = softmax(oracle.dense(d.reshape(len(xb), -1), dense_w, dense_b))
            g = (p - yb) / len(xb)
            gd, gw, gb = oracle.dense_backward(d.reshape(len(xb), -1), dense_w, g)
            gh = oracle.tanh_backward(h, oracle.dropout_backward(gd.reshape(h.shape), mask, 0.5))
            _, gk, gkb = oracle.conv2d_backward(xb, kernels, gh, need_grad_x=False)
            dense_w -= LR * gw
            dense_b -= LR * gb
            kernels -= LR * gk
            bias -= LR * gkb
        b = spec["test_batch"]
        for s in range(0, len(xs), b):
            h = oracle.tanh(oracle.conv2d(xs[s:s + b], kernels, bias))
            oracle.dense(h.reshape(len(h), -1), dense_w, dense_b).argmax(axis=1)
    return {"version": f"numpy {np.__version__}"}, {"epoch": epoch}


def make_measures(spec):
    return {"cconv": cconv_measures, "torch": torch_measures, "keras": keras_measures,
            "jax": keras_measures, "oracle": oracle_measures}[spec["kind"]](spec)


def main():
    p = _harness.parser(__doc__)
    p.add_argument("--test-batch", type=int, default=500)
    p.add_argument("--oracle", action="store_true", help="add the NumPy oracle as a row")
    args = p.parse_args()
    if args.worker:
        return _harness.serve(make_measures, args.worker)
    test_images = 1000 if args.quick else TEST_IMAGES
    if args.quick:
        args.repeats = min(args.repeats, 2)
    params = {"test_batch": args.test_batch, "test_images": test_images}
    extra = [_harness.Row("oracle (NumPy) float32", "oracle", "competitor",
                          spec={"path": args.cconv_path})] if args.oracle else []
    what = f"{TRAIN_BATCHES} x {BATCH} train + {test_images} test images"
    table = [Measure("epoch", f"epoch s (test batch {args.test_batch})", 1, "s"),
             Measure("epoch@32", "epoch@32 s", 1, "s"),
             Measure("f64 epoch", "f64 epoch s", 1, "s", "float64")]
    res = _harness.bench(__file__, args, params,
                         f"chapter-10 network, float32, seconds per epoch ({what})",
                         table, extra)
    print()
    res.print_ratios([m.key for m in table])
    picked = res.find(role=_harness.PICKED)
    for old in [r for r in res.rows if r.role == "old"] or [None]:
        res.print_target(picked, old, ["epoch"], 1.0, "picked level no slower than the old build")
    res.print_target(picked, res.find(kind="keras"), ["epoch@32"], 10.0,
                     ">= 10x Keras/TF, both as users write it")
    res.print_target(picked, res.find(kind="torch"), ["epoch@32"], 10.0,
                     ">= 10x PyTorch at its fastest test batch, cconv as users write it",
                     their_key="epoch")
    if args.busy:
        res.print_busy_target(picked, "epoch@32", BUSY_GOALS)
    res.print_load()


if __name__ == "__main__":
    main()
