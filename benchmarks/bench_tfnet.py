"""Training and inference throughput of the TensorFlow tutorial's MNIST network: cconv
float32 at each CPU level against PyTorch, Keras 3 on TensorFlow and Keras 3 on JAX, on
the CPU.

    conv 5x5x32 'same' relu, maxpool 2, conv 5x5x64 'same' relu, maxpool 2,
    flatten, dense 1024 relu, dropout 0.5, dense 10 (logits); Adam 1e-4

Each row runs in its own process (see _harness.py), with the same network, the
tutorial's initialisation (truncated normal 0.1, biases 0.1), the same threads, random
images in [0, 1) (speed does not depend on pixel values). Measures, medians over
--repeats runs after a warm-up run:
  train     images/s over --train-steps batches of 50 (forward, backward, Adam step),
            each framework at its fastest (PyTorch: a plain loop, channels-last;
            Keras/TF: train_on_batch, oneDNN, no XLA: XLA measured 1.8x slower here;
            Keras/JAX: train_on_batch, jit-compiled)
  infer     images/s over one batch of 1000 (PyTorch: inference_mode, channels-last;
            Keras: predict_on_batch)
  fit@32    as users write it: fit(x, y) at the default batch size 32, one epoch over
            the same images (PyTorch: a DataLoader(batch_size=32, shuffle=True) loop,
            channels-first; its DataLoader's own default, batch 1, nobody trains with)
  predict@32  as users write it: predict(x) on the 1000 images at the default batch 32
            (PyTorch: a DataLoader(batch_size=32) loop, channels-first)
GFLOP/s and percent of peak follow the table (see _harness.py; FLOPs by flops.py:
forward 27.77 MFLOP per image, training 82.05 MFLOP). They are "effective": cconv's
conv2 runs Winograd F(2x2, 5x5), 36 products where the direct convolution does 100, so
its share can pass 100% of the peak.

    python benchmarks/bench_tfnet.py [--repeats 5] [--capability all] [--old DIR] [--busy N] [--quick]
"""
import numpy as np

import _harness
import flops
from _harness import Measure

BATCH, INFER_BATCH, USER_BATCH = 50, 1000, 32


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
    count = flops.count(model)
    info["flop"] = {"train": len(x) * count.training, "fit@32": len(x) * count.training,
                    "infer": len(xi) * count.forward, "predict@32": len(xi) * count.forward}
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
    keras, _, info = _harness.import_keras(spec)
    init = dict(kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.1),
                bias_initializer=keras.initializers.Constant(0.1))
    L = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 5, padding="same", activation="relu", **init), L.MaxPooling2D(2),
        L.Conv2D(64, 5, padding="same", activation="relu", **init), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(1024, activation="relu", **init), L.Dropout(0.5),
        L.Dense(10, **init)])
    _harness.keras_compile(keras, model, optimizer=keras.optimizers.Adam(1e-4),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"])
    x, y, xi = data(spec)
    tensor = keras.ops.convert_to_tensor
    batches = [(tensor(x[s:s + BATCH]), tensor(y[s:s + BATCH]))
               for s in range(0, len(x), BATCH)]
    xit = tensor(xi)

    def train():
        for xb, yb in batches:
            model.train_on_batch(xb, yb)
    return info, {"train": train,
                  "infer": lambda: model.predict_on_batch(xit),
                  "fit@32": lambda: model.fit(x, y, epochs=1, verbose=0),
                  "predict@32": lambda: model.predict(xi, verbose=0)}


def make_measures(spec):
    return {"cconv": cconv_measures, "torch": torch_measures, "keras": keras_measures,
            "jax": keras_measures}[spec["kind"]](spec)


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
    res = _harness.bench(__file__, args, params, "TF-tutorial network, float32", table)
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
