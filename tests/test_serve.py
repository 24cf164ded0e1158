"""`stenograph serve`: the OpenAI-compatible API, the live WebSocket, bad input, limits.

A tiny model is trained once on the tone corpus (`recipe_fixtures`) and served by a
real uvicorn server on 127.0.0.1 (a free port) in a background thread; requests use
httpx, the official `openai` client and the `websockets` client, each with a timeout.
What the server answers is compared with the offline transcription of the same audio
(`transcribe_sources` with the model loaded on its own, as `stenograph transcribe`).
"""

import contextlib
import io
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).parent))
import recipe_fixtures as fixtures  # noqa: E402
from recipe_fixtures import tone_waveform  # noqa: E402

from stenograph.recipes.outputs import parse_srt, parse_vtt  # noqa: E402
from stenograph.recipes.serve.batching import (  # noqa: E402
    DynamicBatcher,
    QueueFullError,
    length_groups,
)
from stenograph.recipes.serve.redecode import RedecodeEndpointing  # noqa: E402
from stenograph.recipes.serve.service import prompt_hotwords  # noqa: E402
from stenograph.recipes.serve.sessions import ProtocolError, decode_frame, parse_config  # noqa: E402

API_KEY = "test-key"
RATE = 16000
PHRASE = "bad cafe"
TIMEOUT = 60.0


# ---------------------------------------------------------------------------
# Fixtures shared with test_serve_load.py and test_serve_browser.py


def write_shifted_corpus(folder: Path, name: str, copies: int, max_shift: float) -> Path:
    """Tone clips of 8 phrases, `copies` times each, with 0 to `max_shift` s of lead-in.

    The shifts teach the model that a phrase starting a few milliseconds later is the
    same phrase: a live stream's segment never starts where the file did.
    """
    rng = np.random.default_rng(len(name))
    lines = []
    for copy in range(copies):
        for index, text in enumerate(fixtures.PHRASES[:8]):
            seed = 100 * copy + index
            noise = np.random.default_rng(seed)
            lead, tail = rng.uniform(0, max_shift, 2) if max_shift else (0.0, 0.0)
            audio = np.concatenate(
                [
                    (0.003 * noise.standard_normal(int(lead * RATE))).astype(np.float32),
                    tone_waveform(text, seed=seed),
                    (0.003 * noise.standard_normal(int(tail * RATE))).astype(np.float32),
                ]
            )
            path = folder / "audio" / f"{name}-{seed}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, RATE)
            record = {"id": f"{name}-{seed}", "audio_path": f"audio/{path.name}", "text": text}
            lines.append(json.dumps({**record, "duration": len(audio) / RATE}))
    manifest = folder / f"{name}.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def trained_model(base: Path) -> Path:
    """A tiny model trained on the tone corpus (cached under `base` for the session)."""
    from test_train import tiny_config

    from stenograph.recipes import train as train_lib

    exp = base / "serve-model" / "exp"
    if not (exp / "best.weights.h5").is_file():
        data = base / "serve-model" / "data"
        train = write_shifted_corpus(data, "train", copies=8, max_shift=0.04)
        valid = write_shifted_corpus(data, "valid", copies=1, max_shift=0.0)
        train_lib.train(tiny_config(train, valid, **{"train.epochs": 3}), exp)
    return exp


class RunningServer:
    """A uvicorn server in a thread on 127.0.0.1, stopped by `stop`."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        (self.port,) = fixtures.free_ports(1)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self):
        return self.app.state.server

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(model_dir: Path, **settings) -> RunningServer:
    """Loads the model into a `SpeechService` and serves it (ready when this returns)."""
    from stenograph.recipes.serve.app import create_app
    from stenograph.recipes.serve.service import ServeSettings, SpeechService

    service = SpeechService(ServeSettings(model=str(model_dir), **settings))
    service.load()
    return RunningServer(create_app(service))


#: Test settings: short timeouts; pre/post roll like the training clips' 45 ms of silence.
TEST_SETTINGS = {
    "api_key": API_KEY,
    "max_upload_mb": 1.0,
    "upload_timeout": 2.0,
    "stream_idle_timeout": 3.0,
    "endpointing": RedecodeEndpointing(pre_roll_seconds=0.05, post_roll_seconds=0.05),
}


def offline_transcript(model_dir: Path, path: Path):
    """The transcript `stenograph transcribe` makes of a file (its own model, greedy)."""
    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.transcribe import AudioSource, load_acoustic_model, transcribe_sources

    model = load_acoustic_model(str(model_dir))
    found = {}
    transcribe_sources(
        [AudioSource(str(path), path.name)],
        model,
        make_decoder("greedy", model.vocabulary),
        on_transcript=found.__setitem__,
        on_failure=lambda index, failure: pytest.fail(failure.message),
    )
    return found[0]


def wav_bytes(audio: np.ndarray, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, RATE, subtype=subtype, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return trained_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(model_dir):
    running = start_server(model_dir, **TEST_SETTINGS)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def phrase_wav(model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("serve-audio") / "phrase.wav"
    path.write_bytes(wav_bytes(tone_waveform(PHRASE)))
    return path, offline_transcript(model_dir, path)


def client(server, key=API_KEY) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT)


def post_file(server, content: bytes | None, name="a.wav", key=API_KEY, **fields):
    files = {"file": (name, content, "audio/wav")} if content is not None else None
    with client(server, key) as http:
        return http.post("/v1/audio/transcriptions", files=files, data=fields or None)


def assert_error(response, status, *words):
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------------------
# Units: batching, prompts, the stream protocol


def test_length_groups_bound_padding_and_keep_every_item():
    lengths = [100, 5000, 120, 4800, 90, 20000, 110]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert len(group) * longest <= 1.5 * sum(lengths[i] for i in group)
    assert len(groups) == 3  # the short three, the two near 5000, the long one


def test_batcher_merges_concurrent_calls_and_bounds_its_queue():
    calls, release = [], threading.Event()

    def model_fn(waveforms, lengths):
        release.wait(5)
        calls.append(len(waveforms))
        return waveforms[:, :, None] * 2, lengths  # [B, S, 1]

    batcher = DynamicBatcher(model_fn, max_batch=8, max_wait=0.05, max_pending=6)
    try:
        first = batcher.submit([np.ones(10, np.float32)])  # taken by the worker, blocks
        time.sleep(0.1)
        futures = [batcher.submit([np.full(10, k, np.float32)])[0] for k in range(6)]
        with pytest.raises(QueueFullError, match="queue is full"):
            batcher.submit([np.ones(10, np.float32)])
        release.set()
        results = [f.result(5) for f in (*first, *futures)]
    finally:
        batcher.close()
    assert calls == [1, 6]  # the six waiting calls ran as one batch
    np.testing.assert_array_equal(results[3][:, 0], np.full(10, 4.0))


def test_batcher_passes_model_errors_to_every_caller():
    def broken(waveforms, lengths):
        raise RuntimeError("model exploded")

    batcher = DynamicBatcher(broken, max_wait=0.01)
    try:
        futures: list[Future] = batcher.submit([np.ones(4, np.float32), np.ones(5, np.float32)])
        for future in futures:
            with pytest.raises(RuntimeError, match="exploded"):
                future.result(5)
    finally:
        batcher.close()


def test_prompt_words_become_hotwords_the_model_can_spell():
    tokens = list(" 'abcdefghijklmnopqrstuvwxyz")
    assert prompt_hotwords("Kitchen, OVEN lights; don't 42 über kitchen", tokens) == [
        "kitchen",
        "oven",
        "lights",
        "don't",
    ]


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (None, "not binary"),
        ("hello", "not JSON"),
        ("[1]", "JSON object"),
        ('{"encoding": "pcm_s16le"}', "sample_rate must be an integer"),
        ('{"sample_rate": 100, "encoding": "pcm_s16le"}', "8000-192000"),
        ('{"sample_rate": 16000, "encoding": "mp3"}', "encoding must be one of"),
    ],
)
def test_stream_config_errors_name_the_problem(message, problem):
    with pytest.raises(ProtocolError, match=problem):
        parse_config(message)


def test_stream_frames_must_be_whole_finite_samples():
    assert decode_frame(np.array([1, -2], "<i2").tobytes(), "pcm_s16le").tolist() == [1, -2]
    with pytest.raises(ProtocolError, match="not whole pcm_s16le samples"):
        decode_frame(b"\x00\x01\x02", "pcm_s16le")
    with pytest.raises(ProtocolError, match="NaN"):
        decode_frame(np.array([0.0, np.nan], "<f4").tobytes(), "float32")


class CountingModel:
    """Stands in for the model: one all-blank frame per 30 ms; counts the audio it ran."""

    def __init__(self):
        self.seconds = 0.0

    def __call__(self, samples):
        self.seconds += len(samples) / RATE
        log_probs = np.full((len(samples) // 480, 29), -20.0, np.float32)  # [T, C]
        log_probs[:, 0] = 0.0
        return log_probs


def counting_stream():
    from stenograph.pipeline.text import Vocabulary
    from stenograph.recipes.decoding import make_decoder
    from stenograph.recipes.serve.redecode import RedecodeStream

    vocabulary = Vocabulary.from_alphabet(" 'abcdefghijklmnopqrstuvwxyz")
    model = CountingModel()
    stream = RedecodeStream(model, make_decoder("greedy", vocabulary), vocabulary, RATE, 0.03)
    return stream, model


def test_redecode_stream_stays_bounded_and_closes_at_pauses():
    from stenograph.recipes.serve.redecode import StreamClosedError

    stream, model = counting_stream()
    noise = np.random.default_rng(0)
    silence = (0.001 * noise.standard_normal(RATE)).astype(np.float32)  # -60 dBFS
    speech = (0.3 * noise.standard_normal(RATE)).astype(np.float32)  # -10 dBFS
    for _ in range(30):  # 30 s of silence: dropped but for the pre-roll, never decoded
        assert stream.feed(silence) == []
    assert stream.buffered_seconds <= 0.16 and model.seconds == 0.0
    closed = []
    for _ in range(2):  # 2 s of "speech", then a pause: one segment closes
        closed += stream.feed(speech[:8000]) + stream.feed(speech[8000:])
    closed += stream.feed(silence)
    assert len(closed) == 1 and closed[0].start == pytest.approx(30 - 0.15, abs=0.011)
    assert closed[0].end == pytest.approx(32 + 0.15, abs=0.011)
    # Partials every 0.4 s over the open segment, plus one final pass: about 4x.
    assert 3.0 < model.seconds / 2.0 < 5.0
    for _ in range(20):  # 20 s without a pause: cut at 15 s at most
        closed += stream.feed(speech)
        assert stream.buffered_seconds <= 15.0
    assert len(closed) >= 2
    before = stream.buffered_seconds
    with pytest.raises(ValueError, match="NaN"):
        stream.feed(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="int16, float32"):
        stream.feed(np.zeros(10, np.int32))
    assert stream.buffered_seconds == before  # refused chunks leave the state as it was
    transcript = stream.finish()
    assert transcript.duration == pytest.approx(30 + 2 + 1 + 20, abs=0.01)
    with pytest.raises(StreamClosedError):
        stream.feed(silence)


def test_redecode_stream_resamples_other_rates():
    stream, _ = counting_stream()
    stream.feed((0.001 * np.ones(48000)).astype(np.float32), sample_rate=48000)
    with pytest.raises(ValueError, match="one sample rate"):
        stream.feed(np.zeros(480, np.float32), sample_rate=44100)
    assert stream.finish().duration == pytest.approx(1.0, abs=0.01)


# ---------------------------------------------------------------------------
# The API on a trained model


def test_health_models_and_metrics(server):
    with client(server, key=None) as anonymous:
        health = anonymous.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["sample_rate"] == RATE and health.json()["mode"] == "redecode"
        assert anonymous.get("/v1/models").status_code == 401  # the API needs the key
        assert "<html" in anonymous.get("/").text  # the page does not
        assert "AudioWorkletNode" in anonymous.get("/static/app.js").text
    with client(server) as http:
        models = http.get("/v1/models").json()
        assert models["object"] == "list" and models["data"][0]["id"] == "exp"
        metrics = http.get("/metrics").text
    assert 'stenograph_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics
    assert 'route="/v1/models",status="401"' in metrics
    for name in ("request_duration_seconds_bucket", "queue_length", "audio_seconds_total"):
        assert f"stenograph_{name}" in metrics or name in metrics


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_every_response_format_parses_and_matches_offline(server, phrase_wav, response_format):
    path, offline = phrase_wav
    assert offline.text, "the trained model should hear something"
    response = post_file(
        server, path.read_bytes(), "phrase.wav", model="whatever", response_format=response_format
    )
    assert response.status_code == 200, response.text
    if response_format == "json":
        body = response.json()
        assert set(body) == {"text", "usage"} and body["text"] == offline.text
        assert body["usage"]["seconds"] == pytest.approx(offline.duration, abs=1e-3)
    elif response_format == "text":
        assert response.text.strip() == offline.text
    elif response_format == "srt":
        cues = parse_srt(response.text)
        assert " ".join(c.text for c in cues) == offline.text
    elif response_format == "vtt":
        cues = parse_vtt(response.text)
        assert " ".join(c.text for c in cues) == offline.text
    else:
        body = response.json()
        assert {"task", "language", "duration", "text", "segments", "words"} <= set(body)
        assert body["text"] == offline.text
        assert [w["word"] for w in body["words"]] == offline.text.split()
        times = [t for w in body["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times) and times[0] >= 0 and times[-1] <= body["duration"]
        for segment in body["segments"]:
            assert {"id", "start", "end", "text", "tokens", "avg_logprob"} <= set(segment)
            assert segment["start"] <= segment["end"] <= body["duration"]


def test_granularities_choose_words_or_segments(server, phrase_wav):
    path, _ = phrase_wav
    words_only = post_file(
        server,
        path.read_bytes(),
        response_format="verbose_json",
        **{"timestamp_granularities[]": "word"},
    ).json()
    assert "words" in words_only and "segments" not in words_only


def test_prompt_words_are_boosted_as_hotwords(server, phrase_wav):
    """A prompt switches the request to beam search with its words as hotwords."""
    path, offline = phrase_wav
    plain = post_file(server, path.read_bytes(), response_format="json").json()["text"]
    boosted = post_file(server, path.read_bytes(), response_format="json", prompt="cafe").json()
    assert plain == offline.text
    assert isinstance(boosted["text"], str)
    assert post_file(server, path.read_bytes(), prompt="").status_code == 200


def test_openai_client_works_unchanged(server, phrase_wav):
    import openai

    path, offline = phrase_wav
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
    with path.open("rb") as audio:
        result = sdk.audio.transcriptions.create(model="stenograph", file=audio)
    assert result.text == offline.text
    with path.open("rb") as audio:
        verbose = sdk.audio.transcriptions.create(
            model="stenograph",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert [w.word for w in verbose.words] == offline.text.split()
    assert verbose.duration == pytest.approx(offline.duration, abs=1e-3)
    with path.open("rb") as audio:
        srt = sdk.audio.transcriptions.create(model="x", file=audio, response_format="srt")
    assert " ".join(c.text for c in parse_srt(srt)) == offline.text
    assert [m.id for m in sdk.models.list()] == ["exp"]
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"), path.open("rb") as audio:
        wrong.audio.transcriptions.create(model="x", file=audio)


# ---------------------------------------------------------------------------
# Bad input: the right status, a JSON error naming the problem, and still serving


def test_bad_uploads_are_refused_with_the_reason(server, phrase_wav):
    path, offline = phrase_wav
    with client(server) as http:
        no_file = http.post("/v1/audio/transcriptions", data={"model": "x"})
    assert_error(no_file, 400, "no file", "'file'")
    assert_error(post_file(server, b"", "empty.wav"), 400, "empty.wav", "empty")
    assert_error(post_file(server, b"this is not audio" * 10, "notes.wav"), 400, "notes.wav")
    flac = wav_bytes(tone_waveform("cage bed head bag ace"), fmt="FLAC")
    assert_error(post_file(server, flac[: len(flac) // 2], "cut.flac"), 400, "cut.flac")
    nan_audio = tone_waveform(PHRASE)
    nan_audio[100:110] = np.nan
    nan_wav = wav_bytes(nan_audio, subtype="FLOAT")
    assert_error(post_file(server, nan_wav, "nan.wav"), 400, "nan.wav", "non-finite")
    too_big = b"\0" * (1024 * 1024 + 10)
    assert_error(post_file(server, too_big, "big.wav"), 413, "larger than", "1 MB")
    unknown = post_file(server, path.read_bytes(), response_format="mp4")
    assert_error(unknown, 400, "unknown response_format", "'mp4'")
    assert_error(post_file(server, path.read_bytes(), key="nope"), 401, "API key")
    assert_error(post_file(server, path.read_bytes(), key=None), 401, "API key")
    still = post_file(server, path.read_bytes(), response_format="json")
    assert still.status_code == 200 and still.json()["text"] == offline.text


def test_a_chunked_body_over_the_limit_is_refused_too(server):
    """Without Content-Length the limit is enforced while the body streams in."""

    def chunks():
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 65536

    with client(server) as http:
        response = http.post(
            "/v1/audio/transcriptions",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
    assert_error(response, 413, "larger than")


def test_a_client_sending_one_byte_a_second_is_timed_out(server):
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        reply = b""
        for byte in body[:8]:  # 8 s at most; the server's limit is 2 s
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # the server closed the connection after answering
            sock.settimeout(1.0)
            try:
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            if b"\r\n\r\n" in reply:
                break
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"did not arrive within 2 s" in reply
    assert time.monotonic() - started < 6
    with client(server, key=None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------
# WS /v1/stream


def stream_url(server) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/stream"


@contextlib.contextmanager
def open_stream(server, config=None, headers=None):
    with connect(stream_url(server), additional_headers=headers, open_timeout=TIMEOUT) as ws:
        if config is not None:
            ws.send(json.dumps(config))
        yield ws


def receive(socket_, timeout=TIMEOUT) -> dict:
    return json.loads(socket_.recv(timeout=timeout))


def receive_until(socket_, types: set[str], limit: int = 1000) -> list[dict]:
    """Messages up to and including the first of one of `types` (at most `limit`)."""
    messages = []
    for _ in range(limit):
        messages.append(receive(socket_))
        if messages[-1]["type"] in types | {"error"}:
            return messages
    raise AssertionError(f"no {types} message in {limit}: {messages[-3:]}")


def test_stream_sends_partials_then_finals_with_word_times(server, phrase_wav):
    _, offline = phrase_wav
    audio = (tone_waveform(PHRASE) * 32767).astype("<i2")
    silence = np.zeros(RATE, "<i2")
    with open_stream(
        server, {"sample_rate": RATE, "encoding": "pcm_s16le", "api_key": API_KEY}
    ) as ws:
        ready = receive(ws)
        assert ready == {
            "type": "ready",
            "mode": "redecode",
            "sample_rate": RATE,
            "encoding": "pcm_s16le",
        }
        for start in range(0, len(audio), 1600):  # 100 ms frames
            ws.send(audio[start : start + 1600].tobytes())
        partial = receive(ws)
        assert partial["type"] == "partial" and partial["text"]
        ws.send(silence.tobytes())
        final = receive_until(ws, {"final"})[-1]
        assert final["type"] == "final" and final["text"] == offline.text
        times = [t for w in final["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times) and final["start"] <= times[0] and times[-1] <= final["end"]
        ws.send(json.dumps({"type": "stop"}))
        done = receive_until(ws, {"done"})[-1]
        assert done["text"] == offline.text
        assert done["duration"] == pytest.approx((len(audio) + len(silence)) / RATE, abs=0.02)


@pytest.mark.parametrize(
    ("first", "then", "problem"),
    [
        (b"\x00\x00", None, "not binary"),
        ("{not json", None, "not JSON"),
        ({"sample_rate": "fast"}, None, "sample_rate must be an integer"),
        ({"sample_rate": RATE, "encoding": "ulaw"}, None, "encoding must be one of"),
        ({"sample_rate": RATE}, b"\x01\x02\x03", "not whole pcm_s16le samples"),
        ({"sample_rate": RATE, "encoding": "float32"}, np.float32([np.nan]).tobytes(), "NaN"),
        ({"sample_rate": RATE}, '{"type": "pause"}', "expected binary audio"),
        ({"sample_rate": RATE, "api_key": "wrong"}, None, "valid API key"),
    ],
)
def test_malformed_stream_messages_get_an_error_naming_the_problem(server, first, then, problem):
    if isinstance(first, dict):
        first = json.dumps({"api_key": API_KEY, **first})
    with open_stream(server) as ws:
        ws.send(first)
        if then is not None:
            assert receive(ws)["type"] == "ready"
            ws.send(then)
        error = receive(ws)
        assert error["type"] == "error" and problem in error["error"], error
    with client(server, key=None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
    assert wait_for_no_streams(server) == 0


def test_stream_header_key_is_checked_at_the_handshake(server):
    from websockets.exceptions import InvalidStatus

    with (
        pytest.raises(InvalidStatus) as refused,
        open_stream(server, headers={"Authorization": "Bearer wrong"}),
    ):
        pass
    assert refused.value.response.status_code == 401
    assert b"API key" in refused.value.response.body
    with open_stream(
        server, {"sample_rate": 8000}, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as ws:
        assert receive(ws)["type"] == "ready"


def wait_for_no_streams(server, seconds=10.0):
    deadline = time.monotonic() + seconds
    while server.state.streams.active and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.state.streams.active


def test_a_client_that_disconnects_mid_stream_frees_its_session(server):
    audio = (tone_waveform(PHRASE) * 32767).astype("<i2")
    with open_stream(server, {"sample_rate": RATE, "api_key": API_KEY}) as ws:
        assert receive(ws)["type"] == "ready"
        ws.send(audio[:4000].tobytes())
        assert server.state.streams.active == 1
        ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close handshake
    assert wait_for_no_streams(server) == 0


def test_a_silent_stream_is_closed_after_the_idle_timeout(server):
    started = time.monotonic()
    with open_stream(server, {"sample_rate": RATE, "api_key": API_KEY}) as ws:
        assert receive(ws)["type"] == "ready"
        error = receive(ws, timeout=10)
    assert error["type"] == "error" and "no message for 3 s" in error["error"]
    assert 2.5 < time.monotonic() - started < 9
    assert wait_for_no_streams(server) == 0


def test_the_cli_parses_serve_options(monkeypatch, model_dir):
    from stenograph.recipes.cli import build_parser
    from stenograph.recipes.serve import settings_from_args

    monkeypatch.setenv("STENOGRAPH_API_KEY", "from-env")
    args = build_parser().parse_args(
        ["serve", str(model_dir), "--max-upload-mb", "3", "--upload-timeout", "7"]
    )
    settings = settings_from_args(args)
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert settings.api_key == "from-env" and settings.max_upload_bytes == 3 * 1024 * 1024
    assert settings.upload_timeout == 7 and settings.decoder_options == {"kind": "greedy"}
    assert os.environ["STENOGRAPH_API_KEY"] == "from-env"


def forward_experiment(folder: Path) -> Path:
    """A causal (forward) experiment with fixed random weights: agreement, not accuracy."""
    import keras

    from stenograph.pipeline.text import Vocabulary
    from stenograph.recipes.config import ExperimentConfig, model_preset
    from stenograph.recipes.experiment import write_experiment_files
    from stenograph.recipes.model import build_model

    config = ExperimentConfig(model=model_preset("streaming", lstm_units=32, dropout=0.0))
    vocabulary = Vocabulary.from_alphabet(" 'abcdefghijklmnopqrstuvwxyz")
    keras.utils.set_random_seed(3)
    model = build_model(config.model, config.features, vocabulary.num_classes)
    write_experiment_files(folder, config, vocabulary, model)
    model.save_weights(folder / "best.weights.h5")
    return folder


def stream_through_server(model: Path, audio: np.ndarray) -> tuple[str, list[dict]]:
    """Serves `model`, streams `audio` (float32, 200 ms frames); returns (mode, messages)."""
    running = start_server(model)
    try:
        with open_stream(running, {"sample_rate": RATE, "encoding": "float32"}) as ws:
            mode = receive(ws)["mode"]
            for start in range(0, len(audio), 3200):
                ws.send(audio[start : start + 3200].tobytes())
            ws.send("end")
            messages = receive_until(ws, {"done"})
    finally:
        running.stop()
    return mode, messages


def causal_reference(exp: Path, audio: np.ndarray):
    from stenograph.recipes.streaming import StreamingRecognizer

    reference = StreamingRecognizer.load(exp).create_stream()
    reference.feed(audio)
    expected = reference.finish()
    assert expected.text, "the random model should emit some characters"
    return expected


def test_a_causal_model_streams_through_the_streaming_recognizer(tmp_path):
    exp = forward_experiment(tmp_path / "forward")
    audio = np.concatenate([tone_waveform("cage bed head bag ace"), np.zeros(RATE, np.float32)])
    expected = causal_reference(exp, audio)
    mode, messages = stream_through_server(exp, audio)
    assert mode == "streaming"
    done = messages[-1]
    assert done["text"] == expected.text
    assert [w["word"] for w in done["words"]] == [w.word for w in expected.words]
    finals = " ".join(m["text"] for m in messages if m["type"] == "final")
    assert " ".join(finals.split()) == expected.text


@pytest.mark.slow
def test_an_exported_causal_model_streams_too(tmp_path):
    from stenograph.recipes.export import export_experiment

    exp = forward_experiment(tmp_path / "forward")
    export = export_experiment(exp, tmp_path / "export").saved_model
    audio = tone_waveform("cage bed head bag ace")
    mode, messages = stream_through_server(export, audio)
    assert mode == "streaming" and messages[-1]["text"] == causal_reference(exp, audio).text


def test_a_full_queue_answers_503_with_retry_after(server, phrase_wav):
    path, _ = phrase_wav
    state = server.state
    state.in_flight += state.service.settings.max_queue  # as if that many were running
    try:
        busy = post_file(server, path.read_bytes())
    finally:
        state.in_flight -= state.service.settings.max_queue
    assert_error(busy, 503, "server busy")
    assert busy.headers["Retry-After"] == "1"
    assert post_file(server, path.read_bytes()).status_code == 200
    with client(server) as http:
        assert "stenograph_rejected_total 1.0" in http.get("/metrics").text


def test_not_ready_until_the_model_is_loaded(tmp_path):
    from starlette.testclient import TestClient

    from stenograph.recipes.serve.app import create_app
    from stenograph.recipes.serve.service import ServeSettings, SpeechService

    service = SpeechService(ServeSettings(model=str(tmp_path / "not-loaded")))
    http = TestClient(create_app(service, load_in_background=False))
    health = http.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    assert health.headers["Retry-After"] == "5"
    loading = http.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")})
    assert_error(loading, 503, "still loading")
