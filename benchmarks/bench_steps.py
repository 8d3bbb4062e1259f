"""Time of each step of the TensorFlow tutorial's network (cconv.presets.build_tf), with
the fusion rules and without them (layer by layer), side by side in one run.

    python benchmarks/bench_steps.py [--threads 1] [--clock cpu] [--repeats 7]

Inference: forward steps over one batch of 1000. Training: forward (training=True) and
backward steps over one batch of 50 (the optimizer's update is not included). Each cell
is the median over --repeats passes after two warm-up passes; every pass times each step
in turn. GF/s: the direct algorithm's FLOPs of the step's layers (flops.py) over its
time; %pk: of the FMA peak at cconv's level on these threads (peak.py). On a shared machine use `--threads 1 --clock cpu` (CPU seconds of this process;
set OPENBLAS_NUM_THREADS=1 as well): wall time mostly measures the neighbours.
"""
import argparse
import statistics
import time

import numpy as np

import cconv
import flops
import peak
from cconv import fusion
from cconv.presets import build_tf


def step_name(step):
    if isinstance(step, fusion.Fused):
        return "+".join(layer.name for layer in step.layers)
    return step.name


def step_flop(step, counts, training):
    """FLOPs per sample of a step (a layer or a fused run of layers)."""
    layers = step.layers if isinstance(step, fusion.Fused) else [step]
    return sum(counts[layer].training if training else counts[layer].forward
               for layer in layers)


def time_steps(model, x, onehot, training, repeats, clock):
    """{step name: median seconds} for one forward (and, training, backward) pass."""
    steps = model._steps(training)
    rng = np.random.default_rng(0)
    times = {step_name(s): [] for s in steps}
    back = {step_name(s): [] for s in steps}
    for r in range(repeats + 2):
        out = x
        for i, s in enumerate(steps):
            # the last step stops at its logits, as in a training step (softmax in the loss)
            forward = s.forward_linear if i == len(steps) - 1 else s.forward
            t0 = clock()
            out = forward(out, training, rng)
            times[step_name(s)].append(clock() - t0)
        if training:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            grad = (e / e.sum(axis=1, keepdims=True) - onehot) / np.float32(len(x))
            for i, s in enumerate(reversed(steps)):
                backward = s.backward_linear if i == 0 else s.backward
                t0 = clock()
                grad = backward(grad)
                back[step_name(s)].append(clock() - t0)
    med = lambda ts: statistics.median(ts[2:]) if ts else 0.0
    counts = dict(flops.per_layer(model))
    return {step_name(s): (med(times[step_name(s)]) + med(back[step_name(s)]),
                           len(x) * step_flop(s, counts, training)) for s in steps}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    fma = peak.measure(cconv.cpu_capability(), args.threads)["fp32"]
    cconv.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    models = {}
    for label, rules in (("layer by layer", []), ("fused", list(fusion.RULES))):
        saved = fusion.RULES[:]
        fusion.RULES[:] = rules
        try:
            cconv.utils.set_random_seed(0)
            models[label] = build_tf()
            models[label].build()
        finally:
            fusion.RULES[:] = saved
    print(f"{args.threads} thread(s), {args.clock} clock, median of {args.repeats}; level "
          f"{cconv.cpu_capability()}, FMA peak fp32 {fma:.0f} GFLOP/s (peak.py)")
    for training, batch in ((False, 1000), (True, 50)):
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        onehot = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
        print(f"\n{'training (forward + backward)' if training else 'inference'}, "
              f"batch {batch}")
        totals = {}
        for label, model in models.items():
            res = time_steps(model, x, onehot, training, args.repeats, clock)
            totals[label] = sum(sec for sec, _ in res.values())
            print(f"  {label}:{'ms':>29}{'GF/s':>8}{'%pk':>6}")
            for name, (sec, flop) in res.items():
                rate = (f"{flop / sec / 1e9:8.1f}{100 * flop / sec / 1e9 / fma:5.0f}%"
                        if flop else "")
                print(f"    {name:<28}{1e3 * sec:9.2f}{rate}")
            flop = sum(f for _, f in res.values())
            print(f"    {'total':<28}{1e3 * totals[label]:9.2f}{flop / totals[label] / 1e9:8.1f}"
                  f"{100 * flop / totals[label] / 1e9 / fma:5.0f}%")
        a, b = totals.values()
        print(f"  fused / layer by layer: {b / a:.3f}")


if __name__ == "__main__":
    main()
