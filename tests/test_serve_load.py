"""A bounded load test of `stenograph serve` (slow): 64 requests from 16 concurrent
clients plus 8 live WebSocket streams at once, on 127.0.0.1 only.

Every request must succeed with the transcript the same file gets alone (batching
with other requests must not change it), every stream must finish, and the server's
memory must come back near where it was after a warm-up round of the same load.
"""

import gc
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).parent))
from recipe_fixtures import PHRASES, tone_waveform  # noqa: E402
from test_serve import RATE, start_server, trained_model, wav_bytes  # noqa: E402

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS_PER_CLIENT, STREAMS = 16, 4, 8
TIMEOUT = 120.0


def rss_mb() -> float:
    """Resident memory of this process (the server runs in a thread of it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = trained_model(tmp_path_factory.getbasetemp())
    running = start_server(model_dir, max_queue=64, max_streams=16)
    yield running
    running.stop()


def transcribe(http: httpx.Client, audio: bytes) -> httpx.Response:
    files = {"file": ("clip.wav", audio, "audio/wav")}
    return http.post("/v1/audio/transcriptions", files=files, data={"response_format": "json"})


def run_client(url: str, clips: list[bytes], expected: list[str], first: int) -> list[str]:
    """One client's requests; returns a description of each failure."""
    failures = []
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        for k in range(REQUESTS_PER_CLIENT):
            index = (first + k) % len(clips)
            response = transcribe(http, clips[index])
            if response.status_code != 200 or response.json()["text"] != expected[index]:
                failures.append(f"clip {index}: {response.status_code} {response.text[:200]}")
    return failures


def run_stream(port: int, audio: np.ndarray) -> list[str]:
    """One live stream sent in real time (100 ms frames); returns failures."""
    frames = (audio * 32767).astype("<i2")
    with connect(f"ws://127.0.0.1:{port}/v1/stream", open_timeout=TIMEOUT) as ws:
        ws.send(json.dumps({"sample_rate": RATE, "encoding": "pcm_s16le"}))
        if json.loads(ws.recv(timeout=TIMEOUT))["type"] != "ready":
            return ["stream not ready"]
        started = time.monotonic()
        for number, start in enumerate(range(0, len(frames), RATE // 10)):
            ws.send(frames[start : start + RATE // 10].tobytes())
            time.sleep(max(0.0, started + (number + 1) * 0.1 - time.monotonic()))
        ws.send(json.dumps({"type": "stop"}))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=TIMEOUT))
            if message["type"] == "error":
                return [f"stream error: {message['error']}"]
            if message["type"] == "done":
                return [] if message["text"] else ["stream heard nothing"]
    return ["stream did not finish"]


def settled_thread_count(url: str, clip: bytes) -> int:
    """Threads alive once idle workers may retire.

    anyio keeps an idle worker thread for 10 s and retires expired ones only when the
    next job is handed to its pool, so wait past that and send one request first.
    """
    time.sleep(11)
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        assert transcribe(http, clip).status_code == 200
    return threading.active_count()


def load_round(server, clips, expected, stream_audio) -> list[str]:
    with ThreadPoolExecutor(CLIENTS + STREAMS) as pool:
        streams = [pool.submit(run_stream, server.port, stream_audio) for _ in range(STREAMS)]
        clients = [
            pool.submit(run_client, server.url, clips, expected, c * REQUESTS_PER_CLIENT)
            for c in range(CLIENTS)
        ]
        return [f for job in clients + streams for f in job.result(timeout=600)]


def test_concurrent_requests_and_streams_all_succeed_and_memory_returns(server):
    clips = [wav_bytes(tone_waveform(p, seed=i)) for i, p in enumerate(PHRASES)]
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        alone = [transcribe(http, clip) for clip in clips]
    assert all(r.status_code == 200 for r in alone)
    expected = [r.json()["text"] for r in alone]
    silence = np.zeros(RATE // 2, np.float32)
    stream_audio = np.concatenate([tone_waveform(PHRASES[0]), silence, tone_waveform("fade")])

    warm_up = load_round(server, clips, expected, stream_audio)
    assert warm_up == []
    threads_before = settled_thread_count(server.url, clips[0])
    gc.collect()
    baseline = rss_mb()

    started = time.monotonic()
    failures = load_round(server, clips, expected, stream_audio)
    seconds = time.monotonic() - started
    assert failures == [], failures[:5]
    deadline = time.monotonic() + 10
    while server.state.streams.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.state.streams.active == 0 and server.state.in_flight == 0
    gc.collect()
    grown = rss_mb() - baseline
    print(f"load round: {seconds:.1f} s, RSS {baseline:.0f} MB -> {baseline + grown:.0f} MB")
    assert grown < 60, f"memory grew by {grown:.0f} MB over a round of the same load"
    threads_after = settled_thread_count(server.url, clips[0])
    print(f"threads once idle workers retire: {threads_before} -> {threads_after}")
    assert threads_after <= threads_before + 2, f"threads {threads_before} -> {threads_after}"
    metrics = httpx.get(server.url + "/metrics", timeout=TIMEOUT).text
    assert 'route="/v1/audio/transcriptions",status="200"' in metrics
    assert "stenograph_rejected_total 0.0" in metrics
    sizes = [
        line for line in metrics.splitlines() if line.startswith("stenograph_model_batch_size_sum")
    ]
    count = [
        line
        for line in metrics.splitlines()
        if line.startswith("stenograph_model_batch_size_count")
    ]
    mean_batch = float(sizes[0].split()[-1]) / float(count[0].split()[-1])
    assert mean_batch > 1.0, "concurrent requests should share model calls"
