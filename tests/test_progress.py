"""verbose="auto" as Keras 3 shows it: a bar redrawn in place on a terminal and in a
Jupyter or IPython kernel, for fit, evaluate and predict; nothing redrawn in a pipe, a
log file or a captured cell. The kernel is faked here (ipykernel loaded, sys.stdout its
OutStream, which is no tty); tests/test_notebook.py runs the real one."""
import io
import sys
import types

import numpy as np
import pytest

import cconv
from cconv import layers
from cconv.callbacks import ProgbarLogger, _live

STEPS = 5  # batches of 4 over the 20 samples below


def small():
    cconv.utils.set_random_seed(0)
    model = cconv.Sequential([layers.Input((6, 6, 1)), layers.Conv2D(2, 3, activation="tanh"),
                              layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(1)
    return model, rng.random((20, 6, 6, 1), dtype=np.float32), rng.integers(0, 3, 20)


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def ipykernel_loaded(monkeypatch):
    """ipykernel.iostream as a running kernel has it loaded; returns its OutStream."""
    module = types.ModuleType("ipykernel.iostream")

    class OutStream(io.StringIO):  # ipykernel's: a text stream, and no tty
        def isatty(self):
            return False
    module.OutStream = OutStream
    monkeypatch.setitem(sys.modules, "ipykernel.iostream", module)
    return OutStream


def to_stdout(monkeypatch, stream):
    """sys.stdout = stream for the rest of the test (set in the test itself: pytest's
    capture sets sys.stdout again between a fixture's setup and the test)."""
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


def redraws(text):
    """The texts drawn over one another on each line, in order (what "\\r" separates)."""
    return [line.split("\r") for line in text.split("\n")]


def test_live_on_a_terminal_and_on_a_kernel_stream_only(ipykernel_loaded, tmp_path):
    assert _live(Terminal())
    assert _live(ipykernel_loaded())
    assert not _live(io.StringIO())             # a pipe-like stream, or a captured cell
    with open(tmp_path / "log.txt", "w") as log:
        assert not _live(log)                   # a log file
    assert not _live(object())                  # no isatty at all


def test_a_stream_like_the_kernels_is_not_live_without_the_kernel(ipykernel_loaded,
                                                                  monkeypatch):
    stream = ipykernel_loaded()
    monkeypatch.delitem(sys.modules, "ipykernel.iostream")
    assert not _live(stream)


def test_auto_in_a_kernel_redraws_fits_bar_each_epoch(ipykernel_loaded, monkeypatch):
    kernel_stdout = to_stdout(monkeypatch, ipykernel_loaded())
    monkeypatch.setattr(ProgbarLogger, "interval", 0.0)
    model, x, y = small()
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False)
    lines = redraws(kernel_stdout.getvalue())
    assert [line[0] for line in lines[0::2]] == ["Epoch 1/2", "Epoch 2/2", ""]
    for line in lines[1::2]:
        # a bar after every batch, then the epoch's line over them
        assert line[0] == ""
        assert [d.split(" ")[0] for d in line[1:]] == \
            [f"{b}/{STEPS}" for b in range(1, STEPS + 1)] + [f"{STEPS}/{STEPS}"]
        assert all("[" in d and "ETA" in d for d in line[1:-1])
        assert "ms/step" in line[-1] and "loss: " in line[-1]


@pytest.mark.parametrize("call", ["evaluate", "predict"])
def test_auto_in_a_kernel_draws_evaluates_and_predicts_bar(ipykernel_loaded, monkeypatch,
                                                           call):
    kernel_stdout = to_stdout(monkeypatch, ipykernel_loaded())
    monkeypatch.setattr(ProgbarLogger, "interval", 0.0)
    model, x, y = small()
    got = model.evaluate(x, y, batch_size=4) if call == "evaluate" else \
        model.predict(x, batch_size=4)
    lines = redraws(kernel_stdout.getvalue())
    assert len(lines) == 2 and lines[1] == [""], lines
    drawn = lines[0]
    assert drawn[0] == "" and len(drawn) == STEPS + 2  # the batches' bars, the last line
    assert all(d.startswith(f"{b}/{STEPS} [") for b, d in enumerate(drawn[1:-1], 1))
    assert drawn[-1].startswith(f"{STEPS}/{STEPS} - ")
    if call == "evaluate":  # the line shows what evaluate returns
        assert f"loss: {got[0]:.4f} - accuracy: {got[1]:.4f}" in drawn[-1]


@pytest.mark.parametrize("kernel", [True, False])
def test_auto_in_a_captured_cell_or_a_pipe_redraws_nothing(request, monkeypatch, kernel):
    # with the kernel: a notebook cell whose output is captured (%%capture,
    # contextlib.redirect_stdout), a log rather than a screen; without: a plain pipe
    if kernel:
        request.getfixturevalue("ipykernel_loaded")
    stream = to_stdout(monkeypatch, io.StringIO())
    model, x, y = small()
    model.fit(x, y, batch_size=4, epochs=2)
    model.evaluate(x, y)
    model.predict(x)
    text = stream.getvalue()
    assert "\r" not in text
    # fit's line per epoch; evaluate and predict print nothing
    assert [line.split(" ")[0] for line in text.splitlines()] == \
        ["Epoch", f"{STEPS}/{STEPS}"] * 2


def test_auto_on_a_terminal_draws_bars(monkeypatch):
    stream = to_stdout(monkeypatch, Terminal())
    model, x, y = small()
    model.predict(x, batch_size=4)
    assert stream.getvalue().startswith("\r1/5 [")


def test_redraws_wait_for_the_interval(monkeypatch):
    stream = to_stdout(monkeypatch, Terminal())
    monkeypatch.setattr(ProgbarLogger, "interval", 3600.0)
    model, x, y = small()
    model.fit(x, y, batch_size=4, epochs=2)
    # the first batch's bar, then none until the epoch's line
    for line in redraws(stream.getvalue())[1::2]:
        assert [d.split(" ")[0] for d in line] == ["", "1/5", "5/5"]


def screen(text):
    """What a terminal shows for text: "\\r" returns to the line's start, and what is
    written then overwrites only as many characters as it has."""
    shown = []
    for line in text.split("\n"):
        row = ""
        for part in line.split("\r"):
            row = part + row[len(part):]
        shown.append(row.rstrip())
    return shown


@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_the_last_line_leaves_nothing_of_the_longer_bar(monkeypatch, call):
    stream = to_stdout(monkeypatch, Terminal())
    model, x, y = small()
    if call == "fit":
        model.fit(x, y, batch_size=4, epochs=1)
    else:
        model.evaluate(x, y, batch_size=4)
    bar, last = (d.rstrip() for d in redraws(stream.getvalue())[-2][-2:])
    assert len(bar) > len(last)
    assert screen(stream.getvalue())[-2] == last
