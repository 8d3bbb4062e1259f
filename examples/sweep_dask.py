"""A sweep of the chapter-10 network over learning rates and seeds, each fit a Dask
task, then large-batch inference with the best model scattered to the workers.

Every fit runs in a worker process and its trained model comes back pickled; the
results equal the same fits run in one process, bit for bit (cconv is deterministic
for a given seed, whatever the thread count). The test images are then predicted as a
dask array, block by block on the workers, with the best model sent to each worker
once.

Run:  python examples/sweep_dask.py                       (a LocalCluster of 2 processes)
      python examples/sweep_dask.py --scheduler tcp://host:8786 --epochs 20
Needs: pip install "cconv[dask]" (dask[distributed]); data as for grokking_ch10.py.
"""
import argparse
import contextlib
import itertools
import sys
import time

import numpy as np

import cconv
from cconv.datasets import mnist
from cconv.presets import BATCH_SIZE, TRAIN_IMAGES, build_fixed


def train(x, y, learning_rate, seed, epochs):
    """One fit of the sweep: the chapter-10 network from `seed`, with SGD at
    `learning_rate`. The same call gives the same bits in any process."""
    cconv.utils.set_random_seed(seed)
    model = build_fixed()
    model.compile(optimizer=cconv.optimizers.SGD(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0, seed=seed)
    return model


def predict_block(block, model):
    return model.predict(block, batch_size=500, verbose=0)


def sweep(client, x, y, learning_rates, seeds, epochs):
    """{(learning_rate, seed): trained model}, each fit a task on the cluster."""
    x_remote, y_remote = client.scatter([x, y], broadcast=True)  # sent once per worker
    grid = list(itertools.product(learning_rates, seeds))
    futures = [client.submit(train, x_remote, y_remote, lr, seed, epochs, pure=False)
               for lr, seed in grid]
    return dict(zip(grid, client.gather(futures)))


def predict_large(client, model, images, chunk=2000):
    """model.predict(images) as a dask array computed on the workers. The images come
    from this process's memory, so their blocks travel inside the task graph (Dask warns
    about its size); on a real cluster, read them with dask itself (da.from_zarr, ...)."""
    import dask.array as da
    model_remote = client.scatter(model, broadcast=True)
    blocks = da.from_array(images, chunks=(chunk,) + images.shape[1:])
    probs = blocks.map_blocks(predict_block, model_remote, dtype=model.dtype,
                              chunks=(blocks.chunks[0], model.output_shape),
                              drop_axis=[2, 3], new_axis=[], meta=np.empty((0, 0)))
    return probs.compute()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scheduler", default=None,
                   help="a Dask scheduler's address (default: a LocalCluster here)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster processes")
    p.add_argument("--learning-rates", type=float, nargs="+", default=[0.005, 0.0156, 0.05])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data", default=None, help="MNIST folder or mnist.npz (default: lookup)")
    args = p.parse_args(argv)
    from dask.distributed import Client, LocalCluster

    (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data)
    x = x_train[:TRAIN_IMAGES, :, :, None] / 255.0
    y = y_train[:TRAIN_IMAGES]
    images = x_test[:, :, :, None] / 255.0

    with contextlib.ExitStack() as stack:  # the cluster closes even when the sweep fails
        cluster = None
        if args.scheduler is None:
            # one task and one OpenMP thread per worker: the workers share this machine's
            # cores
            cluster = stack.enter_context(LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True,
                env={"OMP_NUM_THREADS": "1"}))
        client = stack.enter_context(Client(args.scheduler or cluster))
        start = time.perf_counter()
        models = sweep(client, x, y, args.learning_rates, args.seeds, args.epochs)
        print(f"{len(models)} fits in {time.perf_counter() - start:.1f} s on "
              f"{len(client.scheduler_info()['workers'])} workers")
        scores = {key: m.evaluate(images, y_test, batch_size=500, verbose=0)[1]
                  for key, m in models.items()}
        for (lr, seed), acc in sorted(scores.items()):
            print(f"learning rate {lr:<8g} seed {seed}: test accuracy {acc:.4f}")
        best = max(scores, key=scores.get)
        probs = predict_large(client, models[best], images)
        agree = np.array_equal(probs, models[best].predict(images, batch_size=500))
        print(f"best: learning rate {best[0]:g}, seed {best[1]}; predicted "
              f"{len(probs)} images on the cluster, the same bits as here: {agree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
