"""examples/grokking_ch10.ipynb runs from top to bottom in a real Jupyter kernel
(nbclient with ipykernel), with its EPOCHS parameter cut to a few as papermill would:
any error cell fails. In the kernel, verbose="auto" must draw fit's, evaluate's and
predict's progress bars live (redrawn over a carriage return), and the figures must be
drawn inline."""
import copy
from pathlib import Path

import pytest

from conftest import same_cconv_env

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "grokking_ch10.ipynb"
EPOCHS = 2
STEPS = 8            # batches of 128 over the 1,000 training images
TEST_STEPS = 313     # evaluate's and predict's default batches of 32 over 10,000 images


@pytest.fixture(scope="module")
def executed(mnist_dir, tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    ran = with_parameters(nb, f"EPOCHS = {EPOCHS}")
    # in a folder of its own, importing the cconv under test, reading MNIST from mnist_dir
    client = nbclient.NotebookClient(
        ran, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}})
    client.execute(env=same_cconv_env(CCONV_DATA_DIR=mnist_dir))
    return ran


def with_parameters(nb, source):
    """A copy of nb with `source` run right after the cell tagged "parameters", as
    papermill injects its -p values."""
    nb = copy.deepcopy(nb)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs one cell tagged 'parameters'"
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)
    return nb


def cell_running(nb, call):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and call in c.source]
    return cell


def stdout_of(cell):
    return "".join(o.text for o in cell.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source


def test_every_cell_runs_and_the_parameter_cuts_the_epochs(executed):
    # nbclient raised at the first error cell; here, every code cell ran
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    out = stdout_of(cell_running(executed, "model.fit("))
    assert f"Epoch {EPOCHS}/{EPOCHS}" in out and f"Epoch {EPOCHS + 1}/" not in out
    assert len(stdout_of(cell_running(executed, "presets.run_book(")).splitlines()) == EPOCHS


@pytest.mark.parametrize("call, steps, bars", [("model.fit(", STEPS, EPOCHS),
                                               ("model.evaluate(", TEST_STEPS, 1),
                                               ("model.predict(", TEST_STEPS, 1)])
def test_progress_bars_are_live_in_the_kernel(executed, call, steps, bars):
    out = stdout_of(cell_running(executed, call))
    lines = [line for line in out.split("\n") if f"{steps}/{steps} - " in line]
    assert len(lines) == bars, out
    for line in lines:
        drawn = line.split("\r")
        # the first batch's bar over a carriage return, any later ones, then the last line
        assert drawn[0] == "" and len(drawn) >= 3, repr(line)
        assert drawn[1].startswith(f"1/{steps} ["), repr(line)
        assert drawn[-1].startswith(f"{steps}/{steps} - "), repr(line)


@pytest.mark.parametrize("call", ["plot.plot_history(", "plot.plot_kernels(",
                                  "plot.plot_feature_maps(", "book.test_acc"])
def test_figures_are_drawn_inline(executed, call):
    cell = cell_running(executed, call)
    assert any("image/png" in o.get("data", {}) for o in cell.outputs), call
