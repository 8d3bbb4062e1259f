"""Training and inference throughput of the TensorFlow tutorial's MNIST network: cconv
float32 at each CPU level against PyTorch and Keras 3 on TensorFlow, on the CPU.

    conv 5x5x32 'same' relu, maxpool 2, conv 5x5x64 'same' relu, maxpool 2,
    flatten, dense 1024 relu, dropout 0.5, dense 10 (logits); Adam 1e-4

Each row runs in its own process (see _harness.py), with the same network, the
tutorial's initialisation (truncated normal 0.1, biases 0.1), the same threads, random
images in [0, 1) (speed does not depend on pixel values). Measures, medians over
--repeats runs after a warm-up run:
  train     images/s over --train-steps batches of 50 (forward, backward, Adam step),
            each framework at its fastest (PyTorch: a plain loop, channels-last;
            Keras: train_on_batch, oneDNN, no XLA: XLA measured 1.8x slower here)
  infer     images/s over one batch of 1000 (PyTorch: inference_mode, channels-last;
            Keras: predict_on_batch)
  fit@32    as users write it: fit(x, y) at the default batch size 32, one epoch over
            the same images (PyTorch: a DataLoader(batch_size=32, shuffle=True) loop,
            channels-first; its DataLoader's own default, batch 1, nobody trains with)
  predict@32  as users write it: predict(x) on the 1000 images at the default batch 32
            (PyTorch: a DataLoader(batch_size=32) loop, channels-first)
The numpy row times numpy's 2048x2048 float32 matmul on the same threads, taking turns
with the others: the machine's peak. Achieved GFLOP/s counts multiply-adds as two FLOPs
over every 5x5 tap (padding included): forward 27.77 MFLOP per image; training is
forward + weight gradients + input gradients (all but conv1's), 82.05 MFLOP per image.
They are "effective": cconv's conv2 runs Winograd F(2x2, 5x5), 36 products where the
direct convolution does 100, so its share can pass 100% of the peak.

    python benchmarks/bench_tfnet.py [--repeats 5] [--capability all] [--old DIR] [--busy N] [--quick]
"""
import numpy as np

import _harness
from _harness import Measure

BATCH, INFER_BATCH, USER_BATCH, GEMM_N = 50, 1000, 32, 2048
MACS = {  # multiply-adds per image, forward
    "conv1": 28 * 28 * 32 * 5 * 5 * 1,
    "conv2": 14 * 14 * 64 * 5 * 5 * 32,
    "dense1": 7 * 7 * 64 * 1024,
    "dense2": 1024 * 10,
}
FORWARD_FLOP = 2 * sum(MACS.values())
TRAIN_FLOP = 3 * FORWARD_FLOP - 2 * MACS["conv1"]  # conv1 needs no input gradient


def measures(train_steps, infer_images):
    return [Measure("train", "train img/s", train_steps * BATCH, "img/s"),
            Measure("infer", "infer img/s", infer_images, "img/s"),
            Measure("fit@32", "fit@32 img/s", train_steps * BATCH, "img/s"),
            Measure("predict@32", "predict@32 img/s", infer_images, "img/s")]


def data(spec):
    rng = np.random.default_rng(0)
    x = rng.random((spec["train_steps"] * BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    return x, y, rng.random((spec["infer_images"], 28, 28, 1), dtype=np.float32)


def cconv_measures(spec):
    cconv, info = _harness.import_cconv(spec)
    from cconv.presets import build_tf
    x, y, xi = data(spec)
    cconv.utils.set_random_seed(0)
    model = build_tf()
    model.build()
    return info, {
        "train": lambda: model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0),
        "infer": lambda: model.predict(xi, batch_size=len(xi)),
        "fit@32": lambda: model.fit(x, y, epochs=1, verbose=0),
        "predict@32": lambda: model.predict(xi)}


def torch_measures(spec):
    torch, info = _harness.import_torch(spec)
    nn = torch.nn

    def make(memory_format):
        """The network and its Adam, in the given memory format."""
        net = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(1024, 10))
        with torch.no_grad():
            for module in net:
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(module.weight, std=0.1, a=-0.2, b=0.2)
                    nn.init.constant_(module.bias, 0.1)
        net.to(memory_format=memory_format)
        return net, torch.optim.Adam(net.parameters(), lr=1e-4, eps=1e-7)  # Keras's eps

    # PyTorch's layout is channels-first (as users write it); channels-last runs this
    # network faster through oneDNN (measured: 1.2x training, 1.5x inference).
    return info, _harness.torch_image_measures(torch, make, *data(spec), BATCH, USER_BATCH)


def keras_measures(spec):
    keras, tf, info = _harness.import_keras(spec)
    init = dict(kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.1),
                bias_initializer=keras.initializers.Constant(0.1))
    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 5, padding="same", activation="relu", **init), L.MaxPooling2D(2),
        L.Conv2D(64, 5, padding="same", activation="relu", **init), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(1024, activation="relu", **init), L.Dropout(0.5),
        L.Dense(10, **init)])
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x, y, xi = data(spec)
    batches = [(tf.constant(x[s:s + BATCH]), tf.constant(y[s:s + BATCH]))
               for s in range(0, len(x), BATCH)]
    xit = tf.constant(xi)

    def train():
        for xb, yb in batches:
            model.train_on_batch(xb, yb)
    return info, {"train": train,
                  "infer": lambda: model.predict_on_batch(xit),
                  "fit@32": lambda: model.fit(x, y, epochs=1, verbose=0),
                  "predict@32": lambda: model.predict(xi, verbose=0)}


def numpy_measures(spec):
    rng = np.random.default_rng(0)
    a, b = (rng.random((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    return {"version": f"numpy {np.__version__}"}, {"gemm": lambda: np.matmul(a, b, out=out)}


def make_measures(spec):
    return {"cconv": cconv_measures, "torch": torch_measures, "keras": keras_measures,
            "numpy": numpy_measures}[spec["kind"]](spec)


def main():
    p = _harness.parser(__doc__)
    p.add_argument("--train-steps", type=int, default=8, help="batches of 50 per timing")
    args = p.parse_args()
    if args.worker:
        return _harness.serve(make_measures, args.worker)
    if args.quick:
        args.repeats, args.train_steps = min(args.repeats, 2), 1
    params = {"train_steps": args.train_steps, "infer_images": 100 if args.quick else INFER_BATCH}
    table = measures(args.train_steps, params["infer_images"])
    peak_row = _harness.Row("numpy matmul", "numpy", "reference")
    res = _harness.bench(__file__, args, params, "TF-tutorial network, float32",
                         table + [Measure("gemm", "gemm", 1, "s")], [peak_row])
    peak = 2 * GEMM_N ** 3 / res.medians[peak_row.label]["gemm"] / 1e9
    print(f"\nfloat32 GEMM peak ({res.infos[peak_row.label]['version']} matmul "
          f"{GEMM_N}x{GEMM_N}, taking turns with the rows): {peak:.1f} GFLOP/s")
    print(f"FLOPs per image: forward {FORWARD_FLOP / 1e6:.2f} M, training "
          f"{TRAIN_FLOP / 1e6:.2f} M. Effective GFLOP/s (direct-convolution FLOPs over "
          f"time; Winograd does fewer) and % of that peak:")
    for r in res.rows:
        if r is not peak_row:
            cells = []
            for m, flop in ((table[0], TRAIN_FLOP), (table[1], FORWARD_FLOP)):
                gflops = m.images / res.medians[r.label][m.key] * flop / 1e9
                cells.append(f"{m.key} {gflops:6.1f} GFLOP/s {100 * gflops / peak:6.1f}%")
            print(f"{r.label:<{res.label_width()}}{'   '.join(cells)}")
    print()
    res.print_ratios([m.key for m in table])
    torch_row = res.find(kind="torch")
    res.print_target(res.find(role=_harness.PICKED), torch_row, ["train", "infer"], 2.0,
                     "picked level >= 2x PyTorch")
    res.print_target(res.find(kind="cconv", level="avx2", role="level")
                     or res.find(level="avx2", role=_harness.PICKED), torch_row,
                     ["train", "infer"], 1.5, "forced avx2 >= 1.5x PyTorch")
    res.print_load()


if __name__ == "__main__":
    main()
