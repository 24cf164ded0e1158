"""Speed of our LSTM against keras.layers.LSTM: forward and train step (fwd + bwd).

Both layers get the same weights and inputs; each measurement alternates ours and
Keras inside one process so that load from other processes hits both alike.
A train step is the loss ``mean(outputs**2)`` with its gradient w.r.t. every
trainable weight (what ``fit`` computes before the optimizer update), under
``tf.function``. Prints the median wall time of each and the ratio keras / ours (> 1 means ours
is faster) on the median, on the minimum (the least disturbed run) and on the
process CPU time (work done, less sensitive to other processes on the machine).

Usage:
    python benchmarks/lstm_speed.py                      # B=32 T=400 H=256, I in {80, 512}
    python benchmarks/lstm_speed.py --reps 5 --inputs 512 --precisions mixed_bfloat16
    python benchmarks/lstm_speed.py --threads 1          # work per core, robust to load
"""

import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stenograph.layers import LSTM  # noqa: E402


def make_pair(units, input_dim, precision, seed=0):
    keras.config.set_dtype_policy(precision)
    try:
        ours = LSTM(units, return_sequences=True, use_cudnn=False)
        ref = keras.layers.LSTM(units, return_sequences=True, use_cudnn=False)
        ours.build((None, None, input_dim))
        ref.build((None, None, input_dim))
    finally:
        keras.config.set_dtype_policy("float32")
    ours.set_weights(ref.get_weights())
    return ours, ref


def compiled_steps(layer):
    @tf.function
    def forward(x):
        return layer(x, training=False)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_mean(tf.square(tf.cast(y, tf.float32)))
        return tape.gradient(loss, layer.trainable_weights)

    return forward, train_step


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, x):
    """Wall and process-CPU seconds of one call (CPU time is less hit by other load)."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    out = fn(x)
    tf.nest.map_structure(lambda t: t.numpy(), out)  # wait for the result
    return time.perf_counter() - start, cpu_seconds() - start_cpu


def bench(batch, steps, units, input_dim, precision, reps):
    ours, ref = make_pair(units, input_dim, precision)
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, steps, input_dim)), tf.float32)
    fns = {"ours": compiled_steps(ours), "keras": compiled_steps(ref)}
    for fwd, train in fns.values():  # trace and warm up
        timed(fwd, x)
        timed(train, x)
    times = {(name, kind): [] for name in fns for kind in ("forward", "train")}
    for _ in range(reps):
        for name in ("ours", "keras"):  # alternate
            fwd, train = fns[name]
            times[(name, "forward")].append(timed(fwd, x))
            times[(name, "train")].append(timed(train, x))
    summary = {}
    for key, values in times.items():
        walls, cpus = zip(*values, strict=True)
        summary[key] = {
            "median": statistics.median(walls) * 1000,
            "min": min(walls) * 1000,
            "cpu": statistics.median(cpus) * 1000,
        }
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--inputs", type=int, nargs="+", default=[80, 512])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra/inter-op threads for both layers (0: TensorFlow's default). One "
        "thread measures work per core and is far less disturbed by other processes.",
    )
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    threads = args.threads or "default"
    print(f"B={args.batch} T={args.steps} H={args.units} reps={args.reps} threads={threads}")
    print(f"load average before: {os.getloadavg()}")
    print(
        "| I | precision | pass | ours median ms | keras median ms | ratio (median) "
        "| ratio (min) | ratio (process CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for precision in args.precisions:
        for input_dim in args.inputs:
            res = bench(args.batch, args.steps, args.units, input_dim, precision, args.reps)
            for kind in ("forward", "train"):
                o, k = res[("ours", kind)], res[("keras", kind)]
                print(
                    f"| {input_dim} | {precision} | {kind} | {o['median']:.0f} "
                    f"| {k['median']:.0f} | {k['median'] / o['median']:.2f}x "
                    f"| {k['min'] / o['min']:.2f}x | {k['cpu'] / o['cpu']:.2f}x |",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
