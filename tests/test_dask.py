"""examples/sweep_dask.py on a LocalCluster of 2 worker processes: the sweep's fits and
the scattered model's block-wise predictions equal the same work done in this process,
bit for bit. Skipped without dask[distributed] (pip install ".[dask]")."""
import importlib
import os
import sys
from pathlib import Path

import numpy as np

from zoo import need, same_bits

distributed = need("distributed", "dask")
ROOT = Path(__file__).resolve().parents[1]


def load_example(monkeypatch):
    # on sys.path, which the worker processes start from too (multiprocessing's spawn
    # hands them the parent's)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.delitem(sys.modules, "sweep_dask", raising=False)
    return importlib.import_module("sweep_dask")


def images(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 28, 28, 1)) * 0.3
    for i, label in enumerate(y):
        x[i, 2 + 2 * label:4 + 2 * label, 4:24, 0] = 1.0
    return x, y


def test_sweep_on_a_local_cluster_equals_the_same_fits_here(monkeypatch):
    sweep = load_example(monkeypatch)
    x, y = images(256, 0)
    test_x, _ = images(300, 1)
    grid = ([0.01, 0.05], [1, 2])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None,
                                  env={"OMP_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster) as client:
        remote = sweep.sweep(client, x, y, *grid, epochs=2)
        pids = set(client.run(os.getpid).values())
        probs = sweep.predict_large(client, remote[(0.05, 2)], test_x, chunk=128)
    assert os.getpid() not in pids and len(pids) == 2
    assert sorted(remote) == [(lr, s) for lr in grid[0] for s in grid[1]]
    for (lr, seed), model in remote.items():
        here = sweep.train(x, y, lr, seed, epochs=2)
        assert same_bits(model.get_weights(), here.get_weights()), (lr, seed)
        assert model.optimizer.iterations == here.optimizer.iterations
    local = sweep.train(x, y, 0.05, 2, epochs=2)
    want = np.concatenate([sweep.predict_block(test_x[i:i + 128], local)
                           for i in range(0, len(test_x), 128)])
    assert probs.shape == (300, 10) and np.array_equal(probs, want)


def test_the_local_cluster_is_closed_when_the_sweep_fails(monkeypatch):
    sweep = load_example(monkeypatch)
    closed = []

    class FakeCluster:  # no processes: only whether main() closes what it opened
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def close(self):
            closed.append("cluster")

    class FakeClient(FakeCluster):
        def close(self):
            closed.append("client")

    def failing_sweep(*args, **kwargs):
        raise RuntimeError("a task failed")
    monkeypatch.setattr(distributed, "LocalCluster", FakeCluster)
    monkeypatch.setattr(distributed, "Client", FakeClient)
    monkeypatch.setattr(sweep, "sweep", failing_sweep)
    x = np.zeros((4, 28, 28), np.uint8)
    monkeypatch.setattr(sweep.mnist, "load_data",
                        lambda path=None: ((x, np.zeros(4, int)), (x, np.zeros(4, int))))
    try:
        sweep.main(["--epochs", "1"])
    except RuntimeError as exc:
        assert "a task failed" in str(exc)
    else:
        raise AssertionError("the sweep's failure was swallowed")
    assert closed == ["client", "cluster"]
