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
    python benchmarks/lstm_speed.py --bounds             # + the bare matmuls any LSTM must do

``--bounds`` also times, alternated with the Keras forward pass, the two matmuls every
LSTM forward pass must do whatever its loop: the input projection of all steps
(one [T*B, I] x [I, 4H] matmul) and T recurrent [B, H] x [H, 4H] matmuls chained in a
``tf.while_loop`` (nothing else per step). Their sum is a floor for a layer that runs
them one after the other; half of it (both cores busy, perfect overlap) a floor for any
layer. The printed ratios are Keras' forward time over those floors: the most any
forward pass could gain on Keras.
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


def bare_matmuls(batch, steps, units, input_dim, precision):
    """The input projection and the chained recurrent matmuls as tf.functions."""
    dtype = tf.bfloat16 if precision == "mixed_bfloat16" else tf.float32
    rng = np.random.default_rng(1)
    x = tf.cast(rng.normal(size=(steps * batch, input_dim)), dtype)  # [T*B, I]
    kernel = tf.cast(0.05 * rng.normal(size=(input_dim, 4 * units)), dtype)  # [I, 4H]
    recurrent = tf.cast(0.05 * rng.normal(size=(units, 4 * units)), dtype)  # [H, 4H]
    h0 = tf.zeros([batch, units], dtype)

    @tf.function
    def projection(x):
        return tf.matmul(x, kernel)  # [T*B, 4H]

    @tf.function
    def recurrence(h):
        def body(t, h):
            # Feed a quarter of the product back so that the steps stay chained.
            return t + 1, tf.matmul(h, recurrent)[:, :units]  # [B, H]

        return tf.while_loop(lambda t, _: t < steps, body, (0, h))[1]

    return {"projection": (projection, x), "recurrence": (recurrence, h0)}


def bounds(batch, steps, units, input_dim, precision, reps):
    """Median ms of Keras' forward pass and of the bare matmuls, alternated."""
    _, ref = make_pair(units, input_dim, precision)
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, steps, input_dim)), tf.float32)
    fns = {"keras": (compiled_steps(ref)[0], x)}
    fns.update(bare_matmuls(batch, steps, units, input_dim, precision))
    times = {name: [] for name in fns}
    for _ in range(reps + 1):  # the first round traces and warms up
        for name, (fn, arg) in fns.items():
            times[name].append(timed(fn, arg)[0] * 1000)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def print_bounds(args):
    print()
    print(
        "| I | precision | keras forward ms | bare projection ms | bare recurrence ms "
        "| keras / sum | keras / (sum / 2) |"
    )
    print("|---|---|---|---|---|---|---|")
    for precision in args.precisions:
        for input_dim in args.inputs:
            b = bounds(args.batch, args.steps, args.units, input_dim, precision, args.reps)
            total = b["projection"] + b["recurrence"]
            print(
                f"| {input_dim} | {precision} | {b['keras']:.0f} | {b['projection']:.0f} "
                f"| {b['recurrence']:.0f} | {b['keras'] / total:.2f}x "
                f"| {2 * b['keras'] / total:.2f}x |",
                flush=True,
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--inputs", type=int, nargs="+", default=[80, 512])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        help="Keras policies to time. mixed_bfloat16 was faster than float32 on CPUs "
        "with AMX (amx_bf16 in /proc/cpuinfo) and on an AMD EPYC with avx512_bf16, "
        "slower on an Intel Xeon with avx512_bf16 and no AMX (benchmarks/README.md).",
    )
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra/inter-op threads for both layers (0: TensorFlow's default). One "
        "thread measures work per core and is far less disturbed by other processes.",
    )
    parser.add_argument(
        "--bounds", action="store_true", help="also time the bare matmuls (see the docstring)"
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
    if args.bounds:
        print_bounds(args)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
