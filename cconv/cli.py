"""The `cconv` command: train a preset network on MNIST, evaluate saved weights, show
the build. Run `cconv --help` or `python -m cconv --help`."""
import argparse
import os
import sys
import time

import cconv
from cconv import presets

EPILOG = """examples:
  cconv train --preset fixed --epochs 20 --save ch10.npz --plots figures/
  cconv evaluate ch10.npz
  cconv info

MNIST is found as cconv.datasets.mnist.load_data finds it: --data, else
$CCONV_DATA_DIR, ~/.keras/datasets/mnist.npz, the cache, a download."""

PRESET_HELP = "; ".join(f"{p.name}: {p.description} ({p.epochs} epochs by default)"
                        for p in presets.PRESETS.values())


def _count(n, word):
    return f"{n} {word}" + ("s" if n != 1 else "")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """Errors on one line, pointing to --help, with exit status 2 as argparse's."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser():
    parser = _Parser(
        prog="cconv", description="Train and evaluate convolutional networks on MNIST "
        "with cconv's Cython/OpenMP kernels.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cconv {cconv.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    common = _Parser(add_help=False)
    common.add_argument("--data", metavar="DIR",
                        help="MNIST folder of IDX files, or an mnist.npz (default: lookup)")
    common.add_argument("--threads", type=_positive_int, metavar="N",
                        help="OpenMP threads (default: $OMP_NUM_THREADS, else all cores); "
                             "results do not depend on it")
    common.add_argument("--limit", type=_positive_int, metavar="N",
                        help="use at most the first N training and N test images "
                             "(quick runs)")

    train = sub.add_parser(
        "train", parents=[common], help="train a preset network on MNIST",
        description="Train a preset network on MNIST, testing on the test set after every "
                    "epoch. Progress: a Keras-style bar on a terminal, one line per epoch "
                    "otherwise ('book' prints the book's own lines).")
    train.add_argument("--preset", required=True, choices=sorted(presets.PRESETS),
                       help=PRESET_HELP)
    train.add_argument("--epochs", type=_positive_int, metavar="N",
                       help="epochs to train (default: the preset's)")
    train.add_argument("--seed", type=int, default=1,
                       help="seed for initialisation, shuffling and dropout (default 1; "
                            "'book' always uses the book's np.random.seed(1))")
    train.add_argument("--save", metavar="PATH",
                       help="save the trained weights to this .npz, recording the preset")
    train.add_argument("--plots", metavar="DIR",
                       help="write history.png, kernels.png and feature_maps.png here "
                            "(needs matplotlib)")

    evaluate = sub.add_parser(
        "evaluate", parents=[common], help="loss and accuracy of saved weights on the "
        "test set", description="Rebuild the preset recorded in a weights file saved by "
        "'cconv train --save', load the weights and print loss and accuracy on the MNIST "
        "test set.")
    evaluate.add_argument("path", metavar="PATH", help="weights file from 'cconv train --save'")

    info = sub.add_parser("info", help="version, OpenMP, threads, numpy and its BLAS",
                          description="Print how this cconv was built (cconv.show_config()).")
    for command in (train, evaluate, info):
        command.set_defaults(command_parser=command)
    return parser


def _load_mnist(parser, args):
    from cconv.datasets import mnist
    if args.data is not None and not os.path.exists(args.data):
        parser.error(f"--data: {args.data} does not exist")
    try:
        (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data)
    except (ValueError, OSError) as exc:
        if args.data is not None:  # a bad argument
            parser.error(f"--data: {' '.join(str(exc).split())}")
        # nothing found by the lookup: not an argument error, and the message lists options
        raise SystemExit(f"cconv: error: cannot load MNIST: {exc}") from None
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:args.limit], y_test[:args.limit]
    return x_train, y_train, x_test, y_test


def _check_outputs(parser, args):
    """Bad --save/--plots paths fail now, not after a long run."""
    if args.save is not None:
        folder = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(folder):
            parser.error(f"--save: the folder {folder} does not exist")
        if os.path.isdir(args.save):
            parser.error(f"--save: {args.save} is a folder; give a file name")
    if args.plots is not None:
        if os.path.exists(args.plots) and not os.path.isdir(args.plots):
            parser.error(f"--plots: {args.plots} exists and is not a folder")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plots needs matplotlib: pip install \"cconv[examples]\"")


def _write_plots(folder, model, preset, history, x_test, y_test):
    from cconv import plot
    os.makedirs(folder, exist_ok=True)
    files = [os.path.join(folder, name)
             for name in ("history.png", "kernels.png", "feature_maps.png")]
    plot.plot_history(history, path=files[0])
    plot.plot_kernels(model, path=files[1])
    twos = (y_test == 2).nonzero()[0]  # the chapter's figure shows an image of a 2
    index = int(twos[0]) if len(twos) else 0
    image = preset.prepare(x_test[index:index + 1], model.dtype)[0]
    plot.plot_feature_maps(model, image, path=files[2])
    for f in files:
        print(f"wrote {f}")


def _train(parser, args):
    preset = presets.get(args.preset)
    cconv.utils.set_random_seed(args.seed)  # before build: it seeds the initial weights
    model = preset.build()
    _check_outputs(parser, args)
    epochs = args.epochs or preset.epochs
    x_train, y_train, x_test, y_test = _load_mnist(parser, args)
    x_train, y_train = x_train[:preset.train_images], y_train[:preset.train_images]
    print(f"preset {preset.name}: {preset.description}; {len(x_train)} training and "
          f"{len(x_test)} test images, {_count(epochs, 'epoch')}, batch "
          f"{preset.batch_size}, {_count(cconv.get_num_threads(), 'thread')}", flush=True)
    start = time.perf_counter()
    if preset.name == "book":
        run = presets.run_book(x_train, y_train, x_test, y_test, epochs)
        model.set_weights([run.kernels, run.weights_1_2])
        history = {"accuracy": run.train_acc, "val_accuracy": run.test_acc}
        final = f"test accuracy {run.test_acc[-1]:.4f}"
    else:
        model.summary()
        x_test_in = preset.prepare(x_test, model.dtype)
        history = model.fit(preset.prepare(x_train, model.dtype), y_train,
                            batch_size=preset.batch_size, epochs=epochs,
                            validation_data=(x_test_in, y_test), verbose="auto").history
        final = (f"test loss {history['val_loss'][-1]:.4f}, "
                 f"test accuracy {history['val_accuracy'][-1]:.4f}")
    elapsed = time.perf_counter() - start
    done = len(history["val_accuracy"])
    print(f"{_count(done, 'epoch')} in {elapsed:.1f} s "
          f"({elapsed / done:.3f} s per epoch); {final}")
    if args.save is not None:
        presets.save(model, preset.name, args.save)
        print(f"saved weights to {args.save} (preset {preset.name})")
    if args.plots is not None:
        _write_plots(args.plots, model, preset, history, x_test, y_test)
    return 0


def _evaluate(parser, args):
    if not os.path.isfile(args.path):
        parser.error(f"PATH: {args.path} is not a file")
    try:
        name = presets.read_preset(args.path)
        preset = presets.get(name)
        model = preset.build()
        model.load_weights(args.path)
    except (ValueError, TypeError) as exc:
        parser.error(f"PATH: {exc}")
    _, _, x_test, y_test = _load_mnist(parser, args)
    loss, accuracy = model.evaluate(preset.prepare(x_test, model.dtype), y_test,
                                    batch_size=500)
    print(f"preset {name}, {len(x_test)} test images: loss {loss:.4f}, "
          f"accuracy {accuracy:.4f}")
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:
        cconv.set_num_threads(args.threads)
    try:
        if args.command == "info":
            cconv.show_config()
            return 0
        if args.command == "train":
            return _train(args.command_parser, args)
        return _evaluate(args.command_parser, args)
    except KeyboardInterrupt:
        print("\ncconv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # output piped into e.g. `head`, which has closed it: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
