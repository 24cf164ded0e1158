"""`stenograph serve` under load, beside `stenograph transcribe` on the same files.

    python benchmarks/serve_load.py                                   # fresh "small" model
    python benchmarks/serve_load.py --model exp/demo --files 100 --concurrency 1,4,16 \
        --streams 1,4,8 --stream-seconds 20

One run, on 127.0.0.1 only:
  1. `stenograph transcribe MODEL FILES...` as a fresh process (wall time with start-up),
     and the same engine in this process (`transcribe_sources`, windows batched 16 per
     model call: the command's work without its start-up);
  2. `stenograph serve MODEL` as a fresh process; every file POSTed once to
     `/v1/audio/transcriptions` by 1, 4 and 16 concurrent clients: throughput (seconds
     of audio per second) and p50/p95 latency per request;
  3. N concurrent live streams on `WS /v1/stream`, each sending `--stream-seconds` of
     speech in real time (100 ms frames, demo clips with 0.7 s pauses): held in real
     time when every stream's final transcript arrives within 1 s of its "stop" (a
     server that fell behind would still be decoding the backlog then);
  4. the server's peak RSS (VmHWM).

Without `--model` the model is a freshly initialised experiment of the "small" preset
(2xBiLSTM(192), the demo's size): speed does not depend on the weights (greedy
decoding; the re-decoding stream's endpoint is energy-based).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent
DEMO_AUDIO = REPO / "recipes" / "spoken_commands" / "data" / "audio"
STENOGRAPH = str(Path(sys.executable).with_name("stenograph"))


def make_fresh_experiment(folder: Path, preset: str) -> Path:
    """An experiment folder with a freshly initialised model of `preset`."""
    sys.path.insert(0, str(Path(__file__).parent))
    from transcribe_speed import make_fresh_experiment as make

    return make(folder, preset)


def demo_files(count: int) -> list[str]:
    files = sorted(glob.glob(str(DEMO_AUDIO / "test" / "**" / "*.flac"), recursive=True))
    files += sorted(glob.glob(str(DEMO_AUDIO / "dev" / "**" / "*.flac"), recursive=True))
    if not files:
        sys.exit(f"serve_load: no demo audio under {DEMO_AUDIO}")
    return files[:count]


def audio_seconds(paths: list[str]) -> float:
    return sum(sf.info(p).duration for p in paths)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---------------------------------------------------------------------------
# 1. stenograph transcribe


def transcribe_command(model: str, paths: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [STENOGRAPH, "transcribe", model, *paths, "--no-progress"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def transcribe_in_process(model_path: str, paths: list[str]) -> float:
    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.transcribe import AudioSource, load_acoustic_model, transcribe_sources

    model = load_acoustic_model(model_path)
    decoder = make_decoder("greedy", model.vocabulary)
    sources = [AudioSource(p, p) for p in paths]
    transcribe_sources(sources[:2], model, decoder, lambda *a: None, lambda *a: None)  # warm-up
    started = time.perf_counter()
    transcribe_sources(sources, model, decoder, lambda *a: None, lambda *a: None)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------
# 2-4. stenograph serve


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`stenograph serve` in a child process on 127.0.0.1."""

    def __init__(self, model: str, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [STENOGRAPH, "serve", model, "--port", str(self.port), *extra],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                sys.exit(f"serve_load: the server exited:\n{self.log.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        sys.exit("serve_load: the server did not become ready within 300 s")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def post_all(url: str, files: list[bytes], clients: int) -> tuple[float, list[float], int]:
    """Every file once, `clients` at a time; returns (wall seconds, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    pending = list(range(len(files)))

    def client() -> None:
        nonlocal failures
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    index = pending.pop()
                started = time.perf_counter()
                response = http.post(
                    "/v1/audio/transcriptions", files={"file": ("clip.flac", files[index])}
                )
                with lock:
                    latencies.append(time.perf_counter() - started)
                    failures += response.status_code != 200

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for job in [pool.submit(client) for _ in range(clients)]:
            job.result()
    return time.perf_counter() - started, latencies, failures


def live_stream(port: int, audio: np.ndarray, rate: int) -> dict[str, float]:
    """Sends `audio` in real time; counts replies and times "stop" -> final transcript."""
    frames = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    replies: list[float] = []
    done = threading.Event()
    result: dict[str, float] = {}
    with connect(f"ws://127.0.0.1:{port}/v1/stream", open_timeout=60, max_size=None) as ws:
        ws.send(json.dumps({"sample_rate": rate, "encoding": "pcm_s16le"}))
        json.loads(ws.recv(timeout=60))
        started = time.perf_counter()

        def read() -> None:
            while True:
                message = json.loads(ws.recv(timeout=600))
                if message["type"] in ("partial", "final"):
                    replies.append(time.perf_counter() - started)
                if message["type"] == "error":
                    result["error"] = 1.0
                    break
                if message["type"] == "done":
                    result["finish_seconds"] = time.perf_counter() - result["stop_at"]
                    break
            done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        step = rate // 10
        for number, start in enumerate(range(0, len(frames), step)):
            ws.send(frames[start : start + step].tobytes())
            time.sleep(max(0.0, started + (number + 1) * 0.1 - time.perf_counter()))
        result["stop_at"] = time.perf_counter()
        ws.send(json.dumps({"type": "stop"}))
        done.wait(600)
    result["messages"] = float(len(replies))
    return result


def stream_audio(paths: list[str], seconds: float, rate: int) -> np.ndarray:
    """Demo clips with 0.7 s pauses (segments close), cut to `seconds`."""
    pause = np.zeros(int(0.7 * rate), np.float32)
    pieces, total = [], 0
    for path in paths * 100:
        clip, clip_rate = sf.read(path, dtype="float32")
        assert clip_rate == rate, "the demo audio is at the model's rate"
        pieces += [clip, pause]
        total += len(clip) + len(pause)
        if total >= seconds * rate:
            break
    return np.concatenate(pieces)[: int(seconds * rate)]


# ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="experiment or export (default: fresh 'small' model)")
    parser.add_argument("--files", type=int, default=100, help="demo test files to send")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrent HTTP clients")
    parser.add_argument("--streams", default="1,4,8", help="concurrent live streams")
    parser.add_argument("--stream-seconds", type=float, default=20.0, help="audio per stream")
    parser.add_argument("--serve-args", default="", help="extra `stenograph serve` options")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    model = args.model or str(make_fresh_experiment(work / "small", "small"))
    paths = demo_files(args.files)
    seconds = audio_seconds(paths)
    rate = sf.info(paths[0]).samplerate
    load = os.getloadavg()[0]
    print(f"{len(paths)} files, {seconds:.1f} s of audio; model {model}; load average {load:.1f}")

    command = transcribe_command(model, paths)
    engine = transcribe_in_process(model, paths)
    print("\n| what | wall | audio s per s |\n| --- | --- | --- |")
    print(
        f"| `stenograph transcribe` (fresh process, incl. start-up) | {command:.2f} s "
        f"| {seconds / command:.1f} |"
    )
    print(
        f"| the same engine, in process (no start-up) | {engine:.2f} s | {seconds / engine:.1f} |"
    )

    server = Server(model, args.serve_args.split())
    try:
        blobs = [Path(p).read_bytes() for p in paths]
        post_all(server.url, blobs[:4], 2)  # warm-up
        print(
            "\n| clients | wall | audio s per s | vs in-process transcribe | p50 latency "
            "| p95 latency | failures |\n| --- | --- | --- | --- | --- | --- | --- |"
        )
        for clients in [int(c) for c in args.concurrency.split(",")]:
            wall, latencies, failures = post_all(server.url, blobs, clients)
            print(
                f"| {clients} | {wall:.2f} s | {seconds / wall:.1f} | "
                f"{engine / wall:.2f}x | {percentile(latencies, 50) * 1000:.0f} ms | "
                f"{percentile(latencies, 95) * 1000:.0f} ms | {failures} |"
            )
        audio = stream_audio(paths, args.stream_seconds, rate)
        print(
            "\n| live streams | audio each | held in real time | partials+finals per stream "
            "| stop -> final (mean / max) | errors |\n| --- | --- | --- | --- | --- | --- |"
        )
        for count in [int(s) for s in args.streams.split(",")]:
            with ThreadPoolExecutor(count) as pool:
                results = list(
                    pool.map(lambda _: live_stream(server.port, audio, rate), range(count))
                )
            finishes = [r.get("finish_seconds", float("nan")) for r in results]
            replies = sum(r["messages"] for r in results) / count
            errors = sum(int(r.get("error", 0)) for r in results)
            held = "yes" if max(finishes) < 1.0 and not errors else "no"
            print(
                f"| {count} | {len(audio) / rate:.0f} s | {held} | {replies:.0f} | "
                f"{statistics.mean(finishes):.2f} / {max(finishes):.2f} s | {errors} |"
            )
        print(f"\nserver peak RSS: {server.peak_rss_mb():,.0f} MB")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
