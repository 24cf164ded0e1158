"""Streaming speed: `recipes.streaming` streams vs re-transcribing the growing buffer.

    python benchmarks/streaming_speed.py --quick                 # < 2 min, fresh model
    python benchmarks/streaming_speed.py                         # full run
    python benchmarks/streaming_speed.py --model exp/demo-streaming

Ours is a `Stream` (`StreamingRecognizer.create_stream`) fed chunks of 10/40/160 ms,
reading `partial()` after every chunk, and `StreamingStep.compiled_step` alone (the
TensorFlow step without the Python decoding around it). The reference is what one
does without streaming: after every chunk, the offline pass (`recipes.transcribe`'s
acoustic model + greedy decoding, what `stenograph transcribe` runs) over all the
audio so far. Both use the same model and greedy decoding; in one run the table gives
per-chunk compute (median, p95), compute per second of audio and the ratio.

Sections:
  1. per-chunk compute for each chunk size (stream, step alone, offline re-decode);
  2. latency: the model's algorithmic latency (`model.algorithmic_latency_seconds`:
     lookahead + stacking + half an STFT window) and the lag of the partial transcript
     behind the audio fed in real time, on a simulated clock: chunk i arrives when its
     last sample has been spoken, is processed once the previous chunk is done, and
     the lag is (processing end) - (time of the newest CTC frame it produced);
  3. concurrent real-time streams with 160 ms chunks: N streams split over `--threads`
     threads, fed round-robin as fast as possible; N is sustained when one round (a
     160 ms chunk for every stream) takes under 160 ms of wall time on average. N grows
     by doubling, then bisects. The CPU time per stream-chunk gives a projection for
     idle cores (printed as such);
  4. memory per stream (printed first, before the other sections free memory the
     allocator would reuse): the carried TensorFlow state's size, Python allocations
     (tracemalloc) and RSS growth over `--memory-streams` streams fed the same audio.

`--quick` shortens everything (5 s of audio, 10 offline points, 6 rounds per trial,
at most 64 streams, 30 streams x 3 s for memory).

Without `--model` the model is a freshly initialised experiment of the "streaming"
preset (2 forward LSTM(256), stacking 3, lookahead 2; ~1.0 M parameters, the demo
size) with global normalisation statistics computed from the benchmark audio. Speed
does not depend on the weights; the transcript of random weights is nonsense, and
the partial text's cost grows with the open segment, which endpointing (default
settings) rarely closes for random weights, so that cost is an upper bound.
The audio is the demo corpus' test clips joined with 0.3 s pauses to `--seconds`.

The offline re-decode is timed at up to `--offline-points` evenly spaced chunk
positions (its cost depends only on the buffer length) and interpolated for the
others: its totals and lag are estimates, marked "est.".
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
DEMO_AUDIO = REPO / "recipes" / "spoken_commands" / "data" / "audio"
SAMPLE_RATE = 16000
PAUSE_SECONDS = 0.3
CONCURRENCY_CHUNK_MS = 160


# ---------------------------------------------------------------------------
# Audio and model


def benchmark_audio(seconds: float) -> np.ndarray:
    """The demo's test clips joined with pauses, repeated to `seconds` (float32 [S])."""
    files = sorted(glob.glob(str(DEMO_AUDIO / "test" / "**" / "*.flac"), recursive=True))
    if not files:
        sys.exit(f"streaming_speed: no demo audio under {DEMO_AUDIO}")
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), np.float32)
    pieces, total, wanted = [], 0, int(seconds * SAMPLE_RATE)
    for path in files * (1 + wanted // SAMPLE_RATE):
        audio, rate = sf.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            sys.exit(f"streaming_speed: {path} is {rate} Hz, expected {SAMPLE_RATE}")
        pieces += [audio, pause]
        total += len(audio) + len(pause)
        if total >= wanted:
            break
    return np.concatenate(pieces)[:wanted]  # [S]


def make_fresh_experiment(folder: Path, audio: np.ndarray) -> Path:
    """An experiment folder with a fresh "streaming" model and global statistics of `audio`."""
    import keras

    from stenograph.pipeline.features import AudioFeatures, compute_global_stats
    from stenograph.pipeline.text import Vocabulary
    from stenograph.recipes.config import ExperimentConfig, model_preset
    from stenograph.recipes.experiment import write_experiment_files
    from stenograph.recipes.model import build_model

    config = ExperimentConfig(model=model_preset("streaming"))
    vocabulary = Vocabulary.from_alphabet(" 'abcdefghijklmnopqrstuvwxyz")
    keras.utils.set_random_seed(0)
    model = build_model(config.model, config.features, vocabulary.num_classes)
    lengths = np.array([len(audio)], np.int32)
    features, frame_lengths = AudioFeatures(config.features)(audio[None], lengths)
    mean, std = compute_global_stats([(features.numpy(), frame_lengths.numpy())])
    model.get_layer("normalizer").set_statistics(mean, std)
    write_experiment_files(folder, config, vocabulary, model)
    model.save_weights(folder / "best.weights.h5")
    return folder


def chunked(audio: np.ndarray, chunk_ms: int) -> list[np.ndarray]:
    size = SAMPLE_RATE * chunk_ms // 1000
    return [audio[begin : begin + size] for begin in range(0, len(audio), size)]


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


# ---------------------------------------------------------------------------
# 1-2. Per-chunk compute and lag


@dataclass
class ChunkTimes:
    """Per-chunk wall milliseconds and the CTC frames emitted so far after each chunk."""

    chunk_ms: int
    ends: np.ndarray  # [n] sample index where each chunk ends
    stream_ms: np.ndarray  # [n] Stream.feed + Stream.partial
    stream_cpu_s: float  # process CPU seconds of all the stream's chunks
    step_ms: np.ndarray  # [n] StreamingStep.compiled_step alone
    frames: np.ndarray  # [n] CTC frames emitted after the chunk
    offline_ms: np.ndarray  # [n] offline pass over audio[:end] (interpolated between points)
    offline_frames: np.ndarray  # [n]
    offline_points: int
    offline_cpu_s: float  # process CPU seconds of all the chunks (interpolated)


def warm_up(recognizer, audio: np.ndarray) -> None:
    """Traces the step and finish functions once, outside every timing."""
    stream = recognizer.create_stream()
    for chunk in chunked(audio[: SAMPLE_RATE // 2], 160):
        stream.feed(chunk)
        stream.partial()
    stream.finish()


def time_stream(recognizer, audio: np.ndarray, chunk_ms: int) -> tuple:
    """Feeds one Stream and one bare StreamingStep the same chunks, alternating."""
    import tensorflow as tf

    step = recognizer.step
    stream, state = recognizer.create_stream(), step.initial_state()
    stream_ms, step_ms, frames, cpu = [], [], [], 0.0
    for chunk in chunked(audio, chunk_ms):
        start = time.perf_counter()
        log_probs, state = step.compiled_step(tf.constant(chunk[None]), state)
        log_probs.numpy()
        step_ms.append((time.perf_counter() - start) * 1000)
        start, cpu_start = time.perf_counter(), time.process_time()
        stream.feed(chunk)
        stream.partial()
        stream_ms.append((time.perf_counter() - start) * 1000)
        cpu += time.process_time() - cpu_start
        frames.append(int(state["output_frames"]))
    stream.finish()
    return np.array(stream_ms), cpu, np.array(step_ms), np.array(frames)


def time_offline(model, decoder, audio: np.ndarray, ends: np.ndarray, points: int) -> tuple:
    """The offline pass + greedy decoding over audio[:end] at `points` chunk positions."""
    chosen = np.unique(np.linspace(0, len(ends) - 1, min(points, len(ends))).round().astype(int))
    measured_ms, measured_cpu, measured_frames = [], [], []
    for index in chosen:
        buffer = audio[: ends[index]]
        start, cpu_start = time.perf_counter(), time.process_time()
        log_probs, lengths = model.log_probs(buffer[None], np.array([len(buffer)], np.int32))
        decoder.decode_batch(log_probs, lengths)
        measured_ms.append((time.perf_counter() - start) * 1000)
        measured_cpu.append(time.process_time() - cpu_start)
        measured_frames.append(int(lengths[0]))
    at = ends[chosen]
    offline_ms = np.interp(ends, at, measured_ms)
    offline_cpu_s = float(np.interp(ends, at, measured_cpu).sum())
    offline_frames = np.interp(ends, at, measured_frames).round()
    return offline_ms, offline_frames, len(chosen), offline_cpu_s


def measure_chunks(recognizer, model, decoder, audio: np.ndarray, chunk_ms: int, points: int):
    stream_ms, stream_cpu, step_ms, frames = time_stream(recognizer, audio, chunk_ms)
    ends = np.minimum(np.arange(1, len(frames) + 1) * (SAMPLE_RATE * chunk_ms // 1000), len(audio))
    offline_ms, offline_frames, used, offline_cpu = time_offline(
        model, decoder, audio, ends, points
    )
    return ChunkTimes(
        chunk_ms=chunk_ms,
        ends=ends,
        stream_ms=stream_ms,
        stream_cpu_s=stream_cpu,
        step_ms=step_ms,
        frames=frames,
        offline_ms=offline_ms,
        offline_frames=offline_frames,
        offline_points=used,
        offline_cpu_s=offline_cpu,
    )


def real_time_lag(ends: np.ndarray, compute_ms: np.ndarray, frames: np.ndarray, spf: float):
    """Lag of the newest CTC frame behind the clock when chunks arrive in real time.

    Returns:
        `(lags [m] seconds for the chunks after the first frame, backlog seconds at the end)`.
    """
    arrivals = ends / SAMPLE_RATE
    done, lags = 0.0, []
    for arrival, compute, count in zip(arrivals, compute_ms / 1000, frames, strict=True):
        done = max(arrival, done) + compute
        if count > 0:
            lags.append(done - (count - 1) * spf)
    return np.array(lags), done - arrivals[-1]


# ---------------------------------------------------------------------------
# 3. Concurrent streams


def feed_round_robin(streams: list, chunks: list[np.ndarray], rounds: int, offset: int, out: list):
    """One thread's share: every round, one chunk into each of its streams."""
    for round_index in range(rounds):
        start = time.perf_counter()
        for number, stream in enumerate(streams):
            stream.feed(chunks[(offset + number * 7 + round_index) % len(chunks)])
            stream.partial()
        out.append(time.perf_counter() - start)


def run_streams(recognizer, chunks: list[np.ndarray], count: int, threads: int, rounds: int):
    """Wall and CPU seconds per round for `count` streams over `threads` threads, round times."""
    streams = [recognizer.create_stream() for _ in range(count)]
    for number, stream in enumerate(streams):  # untimed first chunk: each stream is live
        stream.feed(chunks[number % len(chunks)])
    shares = [streams[index::threads] for index in range(threads)]
    round_times: list[list[float]] = [[] for _ in shares]
    workers = [
        threading.Thread(target=feed_round_robin, args=(share, chunks, rounds, index, times))
        for index, (share, times) in enumerate(zip(shares, round_times, strict=True))
        if share
    ]
    start, cpu_start = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return wall / rounds, cpu / rounds, [t for times in round_times for t in times]


def search_streams(recognizer, audio: np.ndarray, args) -> tuple[int, dict[int, float]]:
    """Largest N (up to --max-streams) whose rounds keep up with real time.

    Returns:
        `(N, {streams tried: CPU ms per stream per 160 ms chunk})`.
    """
    chunks = chunked(audio, CONCURRENCY_CHUNK_MS)[:-1]  # whole chunks only
    budget = CONCURRENCY_CHUNK_MS / 1000
    cpu_per_chunk: dict[int, float] = {}

    def sustained(count: int) -> bool:
        per_round, cpu, times = run_streams(recognizer, chunks, count, args.threads, args.rounds)
        cpu_per_chunk[count] = cpu * 1000 / count
        ok = per_round < budget
        print(
            f"| {count} | {per_round * 1000:.1f} | {percentile(times, 95) * 1000:.1f} "
            f"| {cpu * 1000:.1f} | {cpu_per_chunk[count]:.2f} "
            f"| {'keeps up' if ok else 'falls behind'} |",
            flush=True,
        )
        return ok

    print(
        "| streams | wall ms per round | p95 ms of a thread's round | CPU ms per round "
        "| CPU ms per stream-chunk | real time? |"
    )
    print("| --- | --- | --- | --- | --- | --- |")

    good, bad = 0, None
    count = 1
    while count <= args.max_streams:
        if not sustained(count):
            bad = count
            break
        good, count = count, count * 2
    if bad is None and good < args.max_streams and sustained(args.max_streams):
        good = args.max_streams
    elif bad is None and good < args.max_streams:
        bad = args.max_streams
    while bad is not None and bad - good > max(1, good // 8):
        middle = (good + bad) // 2
        if sustained(middle):
            good = middle
        else:
            bad = middle
    return good, cpu_per_chunk


# ---------------------------------------------------------------------------
# 4. Memory


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def state_kilobytes(step) -> float:
    """Size of the TensorFlow state one stream carries (from `state_signature`)."""
    sizes = [
        int(np.prod(spec.shape.as_list())) * spec.dtype.size
        for spec in step.state_signature.values()
    ]
    return sum(sizes) / 1024


def memory_per_stream(recognizer, audio: np.ndarray, count: int) -> tuple[float, float, float]:
    """(RSS growth, Python allocations still held, their peak) per stream, in KB."""
    chunks = chunked(audio, CONCURRENCY_CHUNK_MS)
    gc.collect()
    before = rss_bytes()
    tracemalloc.start()
    streams = [recognizer.create_stream() for _ in range(count)]
    for chunk in chunks:
        for stream in streams:
            stream.feed(chunk)
            stream.partial()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    grown = rss_bytes() - before
    del streams
    return grown / count / 1024, held / count / 1024, peak / count / 1024


# ---------------------------------------------------------------------------
# Report


def machine_line() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{cpu}, {cores} cores usable, load average {load}"


def print_memory(recognizer, audio: np.ndarray, args) -> None:
    seconds = min(len(audio) / SAMPLE_RATE, args.memory_seconds)
    rss_kb, held_kb, peak_kb = memory_per_stream(
        recognizer, audio[: int(seconds * SAMPLE_RATE)], args.memory_streams
    )
    print(
        f"\n### Memory per stream ({args.memory_streams} streams, {seconds:.1f} s of audio "
        f"each, fed 160 ms at a time)\n\n"
        f"- carried TensorFlow state: {state_kilobytes(recognizer.step):.1f} KB;\n"
        f"- Python allocations held: {held_kb:,.1f} KB (peak {peak_kb:,.1f} KB; tracemalloc, "
        "numpy included, TensorFlow's tensors not);\n"
        f"- RSS growth: {rss_kb:,.1f} KB (the allocator reuses freed memory, so this "
        "can read below the two above);\n"
        f"- process peak RSS so far: "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB.",
        flush=True,
    )


def print_chunk_table(rows: list[ChunkTimes], audio_seconds: float) -> None:
    print("\n### Per-chunk compute (ms; offline = re-transcribe everything so far)\n")
    print(
        "| chunk | chunks | stream median / p95 | step alone median / p95 "
        "| offline median / p95 (est.) | offline last chunk | stream wall / audio "
        "| offline / stream, wall | CPU ms per audio s: stream / offline (est.) "
        "| offline / stream, CPU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        stream_total, offline_total = row.stream_ms.sum(), row.offline_ms.sum()
        print(
            f"| {row.chunk_ms} ms | {len(row.ends)} "
            f"| {statistics.median(row.stream_ms):.2f} / {percentile(row.stream_ms, 95):.2f} "
            f"| {statistics.median(row.step_ms):.2f} / {percentile(row.step_ms, 95):.2f} "
            f"| {statistics.median(row.offline_ms):.1f} / {percentile(row.offline_ms, 95):.1f} "
            f"| {row.offline_ms[-1]:.1f} "
            f"| {stream_total / 1000 / audio_seconds:.3f} "
            f"| {offline_total / stream_total:,.1f}× "
            f"| {row.stream_cpu_s * 1000 / audio_seconds:,.0f} / "
            f"{row.offline_cpu_s * 1000 / audio_seconds:,.0f} "
            f"| {row.offline_cpu_s / row.stream_cpu_s:,.1f}× |"
        )
    print(
        f"\n(offline timed at {rows[0].offline_points} positions per chunk size, "
        "interpolated for the others; audio "
        f"{audio_seconds:.1f} s. 'stream wall / audio' < 1: one stream keeps up.)"
    )


def print_lag_table(rows: list[ChunkTimes], latency: float, spf: float) -> None:
    print(
        f"\n### Lag of the partial transcript behind the audio, fed in real time (ms)\n\n"
        f"Algorithmic latency of the model: {latency * 1000:.1f} ms "
        f"(CTC frame every {spf * 1000:.0f} ms).\n"
    )
    print(
        "| chunk | stream lag median / p95 / max | stream backlog at end "
        "| offline lag median / p95 / max (est.) | offline backlog at end (est.) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        lag, backlog = real_time_lag(row.ends, row.stream_ms, row.frames, spf)
        offline_lag, offline_backlog = real_time_lag(
            row.ends, row.offline_ms, row.offline_frames, spf
        )
        print(
            f"| {row.chunk_ms} ms "
            f"| {np.median(lag) * 1000:,.0f} / {percentile(lag, 95) * 1000:,.0f} / "
            f"{lag.max() * 1000:,.0f} | {max(backlog, 0) * 1000:,.0f} "
            f"| {np.median(offline_lag) * 1000:,.0f} / {percentile(offline_lag, 95) * 1000:,.0f} / "
            f"{offline_lag.max() * 1000:,.0f} | {max(offline_backlog, 0) * 1000:,.0f} |"
        )


# ---------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="causal experiment folder (default: a fresh model)")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream")
    parser.add_argument(
        "--chunks-ms", type=int, nargs="+", default=[10, 40, 160], help="chunk sizes in ms"
    )
    parser.add_argument("--max-streams", type=int, default=128, help="concurrency search limit")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="feeding threads"
    )
    parser.add_argument(
        "--rounds", type=int, default=25, help="160 ms rounds per concurrency trial"
    )
    parser.add_argument(
        "--offline-points", type=int, default=40, help="positions timed for the offline re-decode"
    )
    parser.add_argument(
        "--memory-streams", type=int, default=100, help="streams in the memory section"
    )
    parser.add_argument(
        "--memory-seconds", type=float, default=10.0, help="audio per stream in the memory section"
    )
    parser.add_argument("--quick", action="store_true", help="short run (< 2 min)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
        args.max_streams = min(args.max_streams, 64)
        args.rounds = min(args.rounds, 6)
        args.offline_points = min(args.offline_points, 10)
        args.memory_streams = min(args.memory_streams, 30)
        args.memory_seconds = min(args.memory_seconds, 3.0)
    if min(args.chunks_ms) < 1 or args.seconds <= 0.5 or min(args.max_streams, args.threads) < 1:
        parser.error("--chunks-ms >= 1, --seconds > 0.5, --max-streams >= 1, --threads >= 1")
    if args.memory_streams < 1 or args.rounds < 1 or args.offline_points < 2:
        parser.error("--memory-streams >= 1, --rounds >= 1, --offline-points >= 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    print(f"Machine: {machine_line()}", flush=True)
    audio = benchmark_audio(args.seconds)

    import tensorflow as tf

    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.model import algorithmic_latency_seconds
    from stenograph.recipes.streaming import StreamingRecognizer
    from stenograph.recipes.transcribe import load_acoustic_model

    with tempfile.TemporaryDirectory() as work:
        folder = Path(args.model or make_fresh_experiment(Path(work) / "fresh", audio))
        recognizer = StreamingRecognizer.load(folder, decoder_options={"kind": "greedy"})
        offline_model = load_acoustic_model(str(folder))
    decoder = make_decoder("greedy", offline_model.vocabulary)
    step = recognizer.step
    latency = algorithmic_latency_seconds(step.model_config, step.feature_config)
    spf = recognizer.seconds_per_frame
    described = args.model or "fresh 'streaming' preset, random weights, corpus statistics set"
    print(
        f"Model: {described}; {recognizer.step.model.count_params():,} parameters; "
        f"TensorFlow {tf.__version__}; audio {len(audio) / SAMPLE_RATE:.1f} s; "
        f"greedy decoding; {args.threads} feeding threads",
        flush=True,
    )
    warm_up(recognizer, audio)
    offline_model.log_probs(audio[None, :SAMPLE_RATE], np.array([SAMPLE_RATE], np.int32))
    print_memory(recognizer, audio, args)

    rows = []
    for chunk_ms in args.chunks_ms:
        print(f"timing {chunk_ms} ms chunks ...", flush=True)
        rows.append(
            measure_chunks(recognizer, offline_model, decoder, audio, chunk_ms, args.offline_points)
        )
    audio_seconds = len(audio) / SAMPLE_RATE
    print_chunk_table(rows, audio_seconds)
    print_lag_table(rows, latency, spf)

    print(f"\n### Concurrent real-time streams, {CONCURRENCY_CHUNK_MS} ms chunks\n", flush=True)
    sustained, cpu_per_chunk = search_streams(recognizer, audio, args)
    limit = "reached --max-streams" if sustained == args.max_streams else "the most that kept up"
    print(f"\nSustained: {sustained} concurrent real-time streams ({limit}; goal >= 20).")

    cores = len(os.sched_getaffinity(0))
    largest = max(cpu_per_chunk)
    one_core = CONCURRENCY_CHUNK_MS / cpu_per_chunk[largest]
    print(
        f"Projection from the CPU time at {largest} streams (not a measurement): "
        f"~{one_core:.0f} streams if the feeding serialises on one core (the GIL), "
        f"~{cores * one_core:.0f} if it spreads over all {cores} idle cores."
    )
    print(
        f"\nDone in {time.perf_counter() - began:.0f} s; machine at the end: {machine_line()}",
        flush=True,
    )


if __name__ == "__main__":
    main()
