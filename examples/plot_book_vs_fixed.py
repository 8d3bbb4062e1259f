"""Plot the test-accuracy curves of the book's run and the fixed run from their logs.

    python examples/grokking_ch10.py --book > book.log
    python examples/grokking_ch10.py > fixed.log
    python examples/plot_book_vs_fixed.py book.log fixed.log docs/book-vs-fixed.png

Needs matplotlib (pip install ".[examples]").
"""
import re
import sys

from cconv._io import atomic_write

LINE = re.compile(r"^I:(\d+) Test-Acc:([0-9.]+) Train-Acc:([0-9.]+)$", re.M)


def read_log(path):
    with open(path) as f:
        rows = LINE.findall(f.read())
    if not rows:
        raise SystemExit(f"{path}: no 'I:j Test-Acc:... Train-Acc:...' lines found")
    return [int(r[0]) for r in rows], [float(r[1]) for r in rows]


def main(book_log, fixed_log, out_png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for path, label in ((book_log, "book's listing (--book)"), (fixed_log, "fixed (default)")):
        epochs, acc = read_log(path)
        ax.plot(epochs, acc, label=f"{label}: final {acc[-1]:.4f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (10,000 images)")
    ax.set_title("Chapter 10 on 1,000 MNIST images: the book's run vs the fixed one")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_write(out_png, suffix=".png.tmp") as f:  # never a half-written figure
        fig.savefig(f, format="png")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
