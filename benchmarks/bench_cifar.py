"""Training and inference throughput of small CIFAR-shaped networks (32x32x3 images, 10
classes), and of keras.io's MNIST convnet (28x28x1): cconv float32 against PyTorch,
Keras 3 on TensorFlow and Keras 3 on JAX, on the CPU.

    --net tf    TensorFlow's CIFAR-10 CNN tutorial: conv 3x3x32 relu, maxpool 2,
                conv 3x3x64 relu, maxpool 2, conv 3x3x64 relu, flatten, dense 64 relu,
                dense 10 (logits); Adam
    --net bn    strides and BatchNormalization: conv 3x3x32 'same' -> BN -> relu,
                conv 3x3x64 stride 2 'same' -> BN -> relu, conv 3x3x128 stride 2 'same'
                -> BN -> relu, global average pool, dense 10 (logits); RMSprop (the
                Keras default)
    --net vgg   a BN-VGG block stack: three blocks of [conv 3x3 'same' -> BN -> relu] x 2
                then maxpool 2, with 32, 64, 128 filters; flatten, dense 10 (logits);
                SGD with momentum 0.9
    --net convnet  keras.io's "Simple MNIST convnet" (examples/keras_mnist_convnet.py)
                on 28x28x1 images: conv 3x3x32 relu, maxpool 2, conv 3x3x64 relu,
                maxpool 2, flatten, dropout 0.5, dense 10 (logits: the example's softmax
                is folded into the loss here as in every row); Adam

The networks are written once for cconv and Keras (their layer APIs are the same) and
once for PyTorch. Each row runs in its own process (see _harness.py), with the same
threads and random images in [0, 1). Measures, medians over --repeats runs after a
warm-up run:
  train       images/s over --train-steps batches of 64 (forward, backward, update),
              each framework at its fastest (PyTorch: a plain loop, channels-last;
              Keras: train_on_batch)
  infer       images/s over one batch of 1000 (PyTorch: inference_mode, channels-last;
              Keras: predict_on_batch)
  fit@32      as users write it: fit(x, y) at the default batch size 32 (PyTorch: a
              DataLoader(batch_size=32, shuffle=True) loop, channels-first)
  predict@32  as users write it: predict(x) at the default batch size 32
GFLOP/s and percent of peak follow the table (see _harness.py; FLOPs by flops.py:
the convolutions' and dense layers' multiply-adds, two FLOPs each).

    python benchmarks/bench_cifar.py [--net tf,bn,vgg,convnet] [--repeats 5]
                                     [--capability all] [--competitors torch,keras,jax]
                                     [--quick]
"""
import numpy as np

import _harness
import flops
from _harness import Measure

BATCH, INFER_BATCH, USER_BATCH = 64, 1000, 32
CLASSES = 10
SHAPES = {"tf": (32, 32, 3), "bn": (32, 32, 3), "vgg": (32, 32, 3), "convnet": (28, 28, 1)}
NETS = tuple(SHAPES)


def layers_of(net, L):
    """The layers of `net` in module L: cconv.layers or keras.layers."""
    def block(filters, strides=1):
        return [L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False),
                L.BatchNormalization(), L.ReLU()]
    if net == "tf":
        return [L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.Flatten(),
                L.Dense(64, activation="relu"), L.Dense(CLASSES)]
    if net == "bn":
        return block(32) + block(64, 2) + block(128, 2) + [L.GlobalAveragePooling2D(),
                                                          L.Dense(CLASSES)]
    if net == "convnet":
        return [L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
                L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                L.Dropout(0.5), L.Dense(CLASSES)]
    vgg = []
    for filters in (32, 64, 128):
        vgg += block(filters) + block(filters) + [L.MaxPooling2D(2)]
    return vgg + [L.Flatten(), L.Dense(CLASSES)]


def optimizer_of(net, module):
    """The net's optimizer in cconv.optimizers or keras.optimizers."""
    if net in ("tf", "convnet"):
        return module.Adam()
    if net == "bn":
        return module.RMSprop()
    return module.SGD(0.01, momentum=0.9)


def torch_net(net, nn):
    """The same network in PyTorch (channels-first shapes)."""
    def block(c_in, c_out, stride=1):
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01), nn.ReLU()]
    if net == "tf":
        return nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * 4 * 64, 64), nn.ReLU(), nn.Linear(64, CLASSES))
    if net == "convnet":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Dropout(0.5), nn.Linear(5 * 5 * 64, CLASSES))
    if net == "bn":
        return nn.Sequential(*block(3, 32), *block(32, 64, 2), *block(64, 128, 2),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, CLASSES))
    mods, c_in = [], 3
    for filters in (32, 64, 128):
        mods += block(c_in, filters) + block(filters, filters) + [nn.MaxPool2d(2)]
        c_in = filters
    return nn.Sequential(*mods, nn.Flatten(), nn.Linear(4 * 4 * 128, CLASSES))


def torch_optimizer(net, torch, params):
    if net in ("tf", "convnet"):
        return torch.optim.Adam(params, lr=1e-3, eps=1e-7)
    if net == "bn":  # Keras's RMSprop: rho 0.9, epsilon 1e-7
        return torch.optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-7)
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def measures(train_steps, infer_images):
    return [Measure("train", "train img/s", train_steps * BATCH, "img/s"),
            Measure("infer", "infer img/s", infer_images, "img/s"),
            Measure("fit@32", "fit@32 img/s", train_steps * BATCH, "img/s"),
            Measure("predict@32", "predict@32 img/s", infer_images, "img/s")]


def data(spec):
    rng = np.random.default_rng(0)
    shape = SHAPES[spec["net"]]
    x = rng.random((spec["train_steps"] * BATCH,) + shape, dtype=np.float32)
    y = rng.integers(0, CLASSES, len(x))
    return x, y, rng.random((spec["infer_images"],) + shape, dtype=np.float32)


def cconv_measures(spec):
    cconv, info = _harness.import_cconv(spec)
    x, y, xi = data(spec)
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([cconv.layers.Input(SHAPES[spec["net"]])]
                             + layers_of(spec["net"], cconv.layers))
    model.compile(optimizer=optimizer_of(spec["net"], cconv.optimizers),
                  loss=cconv.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.build()
    count = flops.count(model)
    info["flop"] = {"train": len(x) * count.training, "fit@32": len(x) * count.training,
                    "infer": len(xi) * count.forward, "predict@32": len(xi) * count.forward}
    return info, {
        "train": lambda: model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0),
        "infer": lambda: model.predict(xi, batch_size=len(xi), verbose=0),
        "fit@32": lambda: model.fit(x, y, epochs=1, verbose=0),
        "predict@32": lambda: model.predict(xi, verbose=0)}


def torch_measures(spec):
    torch, info = _harness.import_torch(spec)

    def make(memory_format):
        net = torch_net(spec["net"], torch.nn).to(memory_format=memory_format)
        return net, torch_optimizer(spec["net"], torch, net.parameters())
    return info, _harness.torch_image_measures(torch, make, *data(spec), BATCH, USER_BATCH)


def keras_measures(spec):
    keras, _, info = _harness.import_keras(spec)
    model = keras.Sequential([keras.Input(SHAPES[spec["net"]])]
                             + layers_of(spec["net"], keras.layers))
    _harness.keras_compile(keras, model, optimizer=optimizer_of(spec["net"], keras.optimizers),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"])
    x, y, xi = data(spec)
    batches = [(x[s:s + BATCH], y[s:s + BATCH]) for s in range(0, len(x), BATCH)]

    def train():
        for xb, yb in batches:
            model.train_on_batch(xb, yb)
    return info, {"train": train,
                  "infer": lambda: model.predict_on_batch(xi),
                  "fit@32": lambda: model.fit(x, y, epochs=1, verbose=0),
                  "predict@32": lambda: model.predict(xi, verbose=0)}


def make_measures(spec):
    return {"cconv": cconv_measures, "torch": torch_measures, "keras": keras_measures,
            "jax": keras_measures}[spec["kind"]](spec)


def report(net, res, table):
    res.print_ratios([m.key for m in table])
    picked = res.find(role=_harness.PICKED)
    for kind in ("torch", "keras", "jax"):
        res.print_target(picked, res.find(kind=kind), ["train", "infer"], 1.5,
                         f"{net}: picked level >= 1.5x {_harness.COMPETITORS[kind]}")
    res.print_load()


def main():
    p = _harness.parser(__doc__)
    p.add_argument("--net", default=",".join(NETS),
                   help=f"comma-separated from {', '.join(NETS)}")
    p.add_argument("--train-steps", type=int, default=4, help="batches of 64 per timing")
    args = p.parse_args()
    if args.worker:
        return _harness.serve(make_measures, args.worker)
    if args.quick:
        args.repeats, args.train_steps = min(args.repeats, 2), 1
    for net in args.net.split(","):
        if net not in NETS:
            p.error(f"--net: expected names from {NETS}, got {net!r}")
        params = {"net": net, "train_steps": args.train_steps,
                  "infer_images": 100 if args.quick else INFER_BATCH}
        table = measures(args.train_steps, params["infer_images"])
        title = f"network '{net}' on {SHAPES[net]} images, float32"
        res = _harness.bench(__file__, args, params, title, table)
        print()
        report(net, res, table)
        print("\n")


if __name__ == "__main__":
    main()
