"""What the chapter-10 network learned: its 16 kernels, and their output maps on a test
image of a 2 with the elementwise max across them (the chapter's central figure).

    python examples/plot_kernels.py                      # trains 300 epochs, seed 1
    python examples/plot_kernels.py --weights ch10.npz   # from `cconv train --save`

writes docs/kernels.png and docs/feature_maps.png (--out to change the folder). Training
is the README's main job (`examples/grokking_ch10.py`, same preset and seed), without
the per-epoch test pass. Needs matplotlib (pip install ".[examples]").
"""
import argparse
import os
import sys
import time

import cconv
from cconv import plot, presets
from cconv.datasets import mnist


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--weights", help="weights saved by 'cconv train --save' (skips training)")
    p.add_argument("--data", help="MNIST folder or mnist.npz (default: lookup)")
    p.add_argument("--out", default="docs", help="folder for the PNGs (default: docs)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if not os.path.isdir(args.out):
        p.error(f"--out: {args.out} is not a folder")

    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data)
    if args.weights:
        name, model = presets.load(args.weights)
        preset = presets.get(name)
        print(f"loaded {args.weights} (preset {name})")
    else:
        preset = presets.get("fixed")
        cconv.utils.set_random_seed(args.seed)
        model = preset.build()
        n = preset.train_images
        start = time.perf_counter()
        model.fit(preset.prepare(x_train[:n], model.dtype), y_train[:n],
                  batch_size=preset.batch_size, epochs=args.epochs, verbose=0)
        print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.1f} s")
    x = preset.prepare(x_test, model.dtype)
    _, acc = model.evaluate(x, y_test, batch_size=500)
    print(f"test accuracy {acc:.4f}")

    two = int((y_test == 2).nonzero()[0][0])  # the first test image of a 2
    kernels = os.path.join(args.out, "kernels.png")
    maps = os.path.join(args.out, "feature_maps.png")
    plot.plot_kernels(model, path=kernels, dpi=90)
    plot.plot_feature_maps(model, x[two], path=maps, dpi=90)
    print(f"wrote {kernels} and {maps} (test image #{two}, a 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
