"""`stenograph transcribe`: speech to text for files, folders and manifests.

Usage:
    stenograph transcribe exp/demo recordings/ --format jsonl --output-dir out/
    stenograph transcribe exports/demo talk.flac --format srt --output-dir subs/
    stenograph transcribe exp/demo --manifest test.jsonl --decoder beam --beam-width 32
    stenograph transcribe exp/demo-streaming talk.wav --stream --chunk-ms 160
    stenograph transcribe exp/demo-streaming --microphone

The model is an experiment folder (`load_experiment`) or a SavedModel written by
`stenograph export`. Every input is streamed in overlapping windows (`longform`), so
memory does not grow with a file's length; windows of all files are batched, shortest
files first, so padding stays small. A file that cannot be read is reported on stderr
(file and reason) and skipped; the exit code is 1 when any file failed. Skipped inputs
also go to a JSON-lines report (`pipeline.errors.ProblemReport`'s format: `id`, `kind`,
`reason`, `source`, `line`): `<output-dir>/transcribe_report.jsonl`, or the file given
with `--report`; it is written (empty when nothing failed) whenever one of them is given.

With `--stream` (a causal model: `--preset streaming`, or `stenograph demo --streaming`)
each file goes through a `recipes.streaming` stream chunk by chunk, the open segment's
partial text on stderr as it grows, the final text and formats as without it.
`--microphone` transcribes the default input device (the `mic` extra: sounddevice)
until Ctrl-C, each segment on stdout as endpointing closes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from stenograph.pipeline.errors import Problem, ProblemReport
from stenograph.pipeline.files import atomic_write_text

from .decoding import DEFAULT_UNK_SCORE_OFFSET
from .longform import AudioWindow, WindowConfig, iter_file_windows, select_words
from .outputs import FILE_SUFFIXES, FORMATS, Transcript, WordTiming, format_transcript

AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
    | {".sph", ".nist"}
    # Decoded by FFmpeg through PyAV (the `media` extra).
    | {".m4a", ".aac", ".webm", ".mka", ".wma", ".amr", ".3gp", ".mp4", ".mkv", ".mov"}
)


# ---------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class AudioSource:
    """One thing to transcribe: a file, or a segment of one (manifest utterances).

    Attributes:
        path: The audio file.
        name: How outputs refer to it: a path relative to the folder given, the file as
            given, or the utterance id.
        offset: Seconds skipped at the start.
        duration: Seconds read after `offset` (None: to the end).
        reference: The manifest's transcript, copied into JSON output.
        output_name: Path of its output files (without suffix) inside an output
            folder; defaults to `name`.
    """

    path: str
    name: str
    offset: float = 0.0
    duration: float | None = None
    reference: str | None = None
    output_name: str = ""


REPORT_FILE = "transcribe_report.jsonl"


def discover_sources(
    inputs: Sequence[str], manifest: str | None = None, allow_outside_root: bool = False
) -> tuple[list[AudioSource], list[Problem]]:
    """Expands files, folders (recursively) and a manifest into audio sources.

    Folders contribute files with a known audio suffix, in sorted order; a file named
    explicitly is used whatever its suffix. Paths that do not exist are problems
    (``missing_audio``), as are folders without audio (``no_audio_files``), manifest
    lines `read_manifest` skips (their own kinds) and an unreadable manifest
    (``unreadable_manifest``).

    Args:
        inputs: Files and folders.
        manifest: Optional JSON-lines manifest (`pipeline.manifest.read_manifest`).
        allow_outside_root: Accept manifest audio paths outside the manifest's folder.

    Returns:
        `(sources, problems)`.
    """
    sources: list[AudioSource] = []
    problems: list[Problem] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if _is_audio_file(p))
            if not found:
                reason = "folder holds no audio files"
                problems.append(Problem(item, None, "no_audio_files", reason))
            sources += [AudioSource(str(p), str(p.relative_to(path))) for p in found]
        elif path.is_file():
            sources.append(AudioSource(str(path), item, output_name=path.name))
        else:
            problems.append(Problem(item, None, "missing_audio", "no such file or folder", item))
    if manifest:
        sources += _manifest_sources(manifest, problems, allow_outside_root)
    return sources, problems


def _is_audio_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES


def _manifest_sources(
    manifest: str, problems: list[Problem], allow_outside_root: bool
) -> list[AudioSource]:
    from stenograph.pipeline.manifest import read_manifest

    try:
        utterances = read_manifest(
            manifest, on_problem=problems.append, allow_outside_root=allow_outside_root
        )
    except (OSError, ValueError) as error:
        problems.append(Problem(manifest, None, "unreadable_manifest", str(error)))
        return []
    return [
        AudioSource(u.audio_path, u.id, u.offset, u.duration, u.text or None) for u in utterances
    ]


def estimated_duration(source: AudioSource) -> float:
    """Seconds of audio in a source from its header (0 when the header is unreadable)."""
    if source.duration is not None:
        return source.duration
    try:
        info = sf.info(source.path)
    except (RuntimeError, OSError, ValueError):
        return 0.0
    return max(0.0, info.frames / info.samplerate - source.offset)


# ---------------------------------------------------------------------------
# Models and decoders


class AcousticModel(Protocol):
    """Waveforms in, CTC log-probabilities out (a Keras experiment or a SavedModel)."""

    sample_rate: int
    seconds_per_frame: float
    vocabulary: Any

    def log_probs(
        self, waveforms: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps float32 [B, S] waveforms and int32 [B] lengths to ([B, T, C], [B])."""
        ...


class Decoder(Protocol):
    """`recipes.decoding` decoders: log-probabilities to text and word frames."""

    def decode_batch(self, log_probs: np.ndarray, lengths: np.ndarray) -> list[Any]:
        """Decodes a batch into results with `text`, `token_ids` and `word_times`."""
        ...


def load_acoustic_model(path: str, weights: str = "best") -> AcousticModel:
    """Loads an experiment folder or an exported SavedModel as an `AcousticModel`.

    Args:
        path: Experiment folder or SavedModel folder.
        weights: For experiments: "best", "last" or a weights file.

    Raises:
        FileNotFoundError: If `path` is neither.
    """
    from .export import is_saved_model, load_experiment_model, load_exported_model

    folder = Path(path)
    if is_saved_model(folder):
        return load_exported_model(folder)
    if (folder / "config.json").is_file():
        return load_experiment_model(folder, weights)
    raise FileNotFoundError(
        f"Expected an experiment folder (with config.json) or an exported SavedModel "
        f"(with saved_model.pb). Received: model={path!r}"
    )


# ---------------------------------------------------------------------------
# The transcription loop


@dataclass
class _FileState:
    source: AudioSource
    words: list[WordTiming] = field(default_factory=list)
    samples: int = 0


@dataclass(frozen=True)
class _Tagged:
    """A window of source `index`, or the error that ended that source's stream."""

    index: int
    window: AudioWindow | None = None
    error: str | None = None


def _source_windows(source: AudioSource, config: WindowConfig) -> Iterator[AudioWindow]:
    return iter_file_windows(source.path, config, source.offset, source.duration)


def _tagged_windows(
    sources: Sequence[AudioSource], order: Sequence[int], config: WindowConfig
) -> Iterator[_Tagged]:
    for index in order:
        try:
            for window in _source_windows(sources[index], config):
                yield _Tagged(index, window=window)
        except Exception as error:  # noqa: BLE001 - any decode failure skips only this file
            yield _Tagged(index, error=_describe(error))


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def input_problem(source: AudioSource, reason: str) -> Problem:
    """The `Problem` for a source that failed: ``missing_audio`` or ``unreadable_audio``."""
    kind = "unreadable_audio" if Path(source.path).is_file() else "missing_audio"
    return Problem(source.path, None, kind, reason, source.name)


def _prefetch(items: Iterator[Any], size: int) -> Iterator[Any]:
    """Runs `items` in a background thread, `size` ahead, so decoding overlaps the model."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=size)
    done = object()

    def produce() -> None:
        try:
            for item in items:
                buffer.put(item)
        finally:
            buffer.put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while (item := buffer.get()) is not done:
        yield item
    thread.join()


def _batches(tagged: Iterator[_Tagged], batch_size: int) -> Iterator[list[_Tagged]]:
    batch: list[_Tagged] = []
    for item in tagged:
        batch.append(item)
        if item.error is None and sum(t.window is not None for t in batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pad(windows: list[AudioWindow]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(w.samples) for w in windows], np.int32)
    waveforms = np.zeros((len(windows), max(1, lengths.max())), np.float32)  # [B, S]
    for row, window in enumerate(windows):
        waveforms[row, : len(window.samples)] = window.samples
    return waveforms, lengths


def window_words(
    word_times: Iterable[tuple[str, int, int]],
    window: AudioWindow,
    seconds_per_frame: float,
    sample_rate: int,
) -> list[WordTiming]:
    """Turns a window's `(word, start_frame, end_frame)` into absolute seconds.

    A word spans its frames: from `start_frame * seconds_per_frame` to
    `end_frame * seconds_per_frame` (end exclusive) after the window's start, clipped.
    """
    offset = window.start / sample_rate
    window_end = window.end / sample_rate
    words = []
    for word, start_frame, end_frame in word_times:
        start = min(offset + start_frame * seconds_per_frame, window_end)
        end = min(offset + end_frame * seconds_per_frame, window_end)
        words.append(WordTiming(word, start, max(start, end)))
    return words


@dataclass
class TranscriptionReport:
    """What a run did: how many inputs succeeded and which failed."""

    transcribed: int = 0
    failures: list[Problem] = field(default_factory=list)
    audio_seconds: float = 0.0


def transcribe_sources(
    sources: Sequence[AudioSource],
    model: AcousticModel,
    decoder: Decoder,
    on_transcript: Callable[[int, Transcript], None],
    on_failure: Callable[[int, Problem], None],
    window_config: WindowConfig | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> TranscriptionReport:
    """Transcribes sources in batches of windows, shortest files first.

    Args:
        sources: Inputs to transcribe.
        model: The acoustic model.
        decoder: A `recipes.decoding` decoder.
        on_transcript: Called with `(source index, transcript)` as each source completes.
        on_failure: Called with `(source index, problem)` for a source that failed
            (`input_problem`: the item id is the source's name).
        window_config: How long audio is cut (20 s windows, 2 s overlap by default).
        batch_size: Windows per model call.
        progress: Show a tqdm bar (seconds of audio) on stderr.

    Returns:
        A `TranscriptionReport`.
    """
    config = window_config or WindowConfig(sample_rate=model.sample_rate)
    durations = [estimated_duration(s) for s in sources]
    order = sorted(range(len(sources)), key=lambda i: durations[i])
    states: dict[int, _FileState] = {}
    failed: set[int] = set()
    report = TranscriptionReport()
    bar = _progress_bar(sum(durations), progress)

    def fail(index: int, reason: str) -> None:
        states.pop(index, None)
        failed.add(index)
        problem = input_problem(sources[index], reason)
        report.failures.append(problem)
        on_failure(index, problem)

    tagged = _prefetch(_tagged_windows(sources, order, config), size=2 * batch_size)
    for batch in _batches(tagged, batch_size):
        windows = [t for t in batch if t.window is not None and t.index not in failed]
        if windows:
            results = _decode(model, decoder, [t.window for t in windows])
        for item in batch:
            if item.error is not None and item.index not in failed:
                fail(item.index, item.error)
        for item, result in zip(windows, results if windows else [], strict=True):
            if item.index in failed:
                continue  # a later window of this file failed to decode
            state = states.setdefault(item.index, _FileState(sources[item.index]))
            window = item.window
            words = window_words(
                result.word_times, window, model.seconds_per_frame, config.sample_rate
            )
            state.words += select_words(words, window, config)
            new_samples = window.end - state.samples
            state.samples = window.end
            # Header durations are estimates (resampling rounds): never overshoot the total.
            bar.update(max(0.0, min(new_samples / config.sample_rate, bar.total - bar.n)))
            if window.is_last:
                transcript = _finish(states.pop(item.index), config.sample_rate)
                report.transcribed += 1
                report.audio_seconds += transcript.duration
                on_transcript(item.index, transcript)
    bar.close()
    return report


def _decode(model: AcousticModel, decoder: Decoder, windows: list[AudioWindow]) -> list[Any]:
    waveforms, lengths = _pad(windows)  # [B, S], [B]
    log_probs, frame_lengths = model.log_probs(waveforms, lengths)  # [B, T, C], [B]
    return decoder.decode_batch(log_probs, frame_lengths)


def _finish(state: _FileState, sample_rate: int) -> Transcript:
    duration = state.samples / sample_rate
    words = tuple(
        WordTiming(w.word, min(w.start, duration), min(w.end, duration)) for w in state.words
    )
    return Transcript(
        source=state.source.name,
        text=" ".join(w.word for w in words),
        words=words,
        duration=duration,
        reference=state.source.reference,
    )


def _progress_bar(total_seconds: float, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total_seconds,
        unit="s",
        unit_scale=True,
        desc="transcribing",
        disable=not enabled,
        file=sys.stderr,
        bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]"
        ),
    )


# ---------------------------------------------------------------------------
# Streaming (causal models)

DEFAULT_CHUNK_MS = 160.0
MIC_EXTRA_HINT = "pip install 'stenograph[mic]'"


class StreamingUnavailableError(ValueError):
    """`--stream` or `--microphone` asked of a model that cannot stream."""


class MicrophoneError(RuntimeError):
    """No microphone to read: the package, its library or an input device is missing."""


def streaming_unavailable_reason(model_path: str) -> str | None:
    """None when `model_path` (experiment or export) is a causal model, else why not."""
    from .config import ExperimentConfig
    from .export import is_saved_model, is_streaming_export
    from .model import is_causal

    folder = Path(model_path)
    how = (
        "train a streaming one with `stenograph train ... --preset streaming` "
        "(or `stenograph demo --streaming`), and export it for the stream signatures"
    )
    if is_saved_model(folder):
        if is_streaming_export(folder):
            return None
        return f"{model_path} is an export without stream signatures (not a causal model); {how}"
    config_path = folder / "config.json"
    if not config_path.is_file():
        return None  # load_acoustic_model's error names what is missing
    model = ExperimentConfig.load(config_path).model
    if is_causal(model):
        return None
    return f"{model_path} is a {model.direction} model, which needs the whole utterance; {how}"


class PartialPrinter:
    """Shows a stream's partial text on stderr: rewritten in place on a terminal, else lines."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.in_place = self.stream.isatty()
        self.last = ""

    def show(self, name: str, text: str) -> None:
        """Shows `text` for input `name` if it changed since the last call."""
        if text == self.last:
            return
        self.last = text
        if self.in_place:
            self.stream.write(f"\r\x1b[K{name}: {text}"[-200:])
        else:
            self.stream.write(f"partial {name}: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the in-place line and forgets the text (the next input starts afresh)."""
        if self.in_place and self.last:
            self.stream.write("\n")
        self.last = ""


def stream_source(
    recognizer: Any, source: AudioSource, chunk_ms: float, partials: PartialPrinter
) -> Transcript:
    """Feeds a file through a new stream in chunks of `chunk_ms`; returns its final transcript.

    Args:
        recognizer: A `recipes.streaming.StreamingRecognizer`.
        source: The file (or manifest segment).
        chunk_ms: Milliseconds of audio per `Stream.feed`.
        partials: Where the partial text goes.
    """
    config = WindowConfig(chunk_ms / 1000.0, 0.0, recognizer.sample_rate)
    stream = recognizer.create_stream()
    try:
        for chunk in _source_windows(source, config):
            stream.feed(chunk.samples)
            partials.show(source.name, stream.partial())
        transcript = stream.finish()
    finally:
        partials.close()
    return dataclasses.replace(transcript, source=source.name, reference=source.reference)


def load_recognizer(args: argparse.Namespace) -> Any:
    """The `StreamingRecognizer` for `args.model` with the command's decoder options.

    Raises:
        StreamingUnavailableError: If the model is not causal.
    """
    from .decoding import describe_decoder, tuned_lm_available, with_tuned_defaults
    from .streaming import StreamingRecognizer

    reason = streaming_unavailable_reason(args.model)
    if reason is not None:
        raise StreamingUnavailableError(reason)
    options = with_tuned_defaults(decoder_options(args, tuned_lm_available(args.model)), args.model)
    recognizer = StreamingRecognizer.load(args.model, decoder_options=options, weights=args.weights)
    print(f"transcribe: streaming, {describe_decoder(options)}", file=sys.stderr)
    return recognizer


def run_stream(
    args: argparse.Namespace,
    sources: Sequence[AudioSource],
    formats: list[str],
    problems: ProblemReport | None = None,
) -> int:
    """`--stream`: every source through its own stream; outputs as without `--stream`.

    `problems` holds what discovery already reported (counted in the summary); failed
    inputs are added to it.
    """
    problems = problems if problems is not None else ProblemReport()
    recognizer = load_recognizer(args)
    writer = OutputWriter(sources, formats, args.output_dir)
    partials = PartialPrinter()
    report = TranscriptionReport()
    for index, source in enumerate(sources):
        try:
            transcript = stream_source(recognizer, source, args.chunk_ms, partials)
        except Exception as error:  # noqa: BLE001 - a failing input skips only that input
            problem = input_problem(source, _describe(error))
            report.failures.append(problem)
            _report_problem(problem, problems)
            writer.add(index, None)
            continue
        report.transcribed += 1
        report.audio_seconds += transcript.duration
        writer.add(index, transcript)
    return _summarize(report, problems)


def input_device_library() -> Any:
    """The `sounddevice` module, once it is known to have an input device to read.

    Raises:
        MicrophoneError: If sounddevice or PortAudio is missing, or there is no input device.
    """
    try:
        import sounddevice
    except ImportError:
        raise MicrophoneError(
            f"--microphone needs the sounddevice package: {MIC_EXTRA_HINT}"
        ) from None
    except OSError as error:  # sounddevice loads the PortAudio library on import
        raise MicrophoneError(
            f"--microphone needs the PortAudio library (Debian: apt-get install libportaudio2): "
            f"{_describe(error)}"
        ) from None
    try:
        sounddevice.query_devices(kind="input")
    except (sounddevice.PortAudioError, ValueError) as error:
        raise MicrophoneError(f"--microphone: no input device found ({_describe(error)})") from None
    return sounddevice


def open_microphone(
    sounddevice: Any, sample_rate: int, chunk_samples: int
) -> tuple[Any, queue.Queue[Any]]:
    """An unstarted `sounddevice.InputStream` (mono float32) and the queue its chunks go to."""
    chunks: queue.Queue[Any] = queue.Queue()

    def collect(indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        chunks.put(indata[:, 0].copy())  # [frames] of [frames, 1]

    device = sounddevice.InputStream(
        samplerate=sample_rate,
        channels=1,
        dtype="float32",
        blocksize=chunk_samples,
        callback=collect,
    )
    return device, chunks


def run_microphone(args: argparse.Namespace) -> int:
    """`--microphone`: live transcription until Ctrl-C (or `--seconds`); segments on stdout."""
    library = input_device_library()  # before the model loads: fail fast
    recognizer = load_recognizer(args)
    rate = recognizer.sample_rate
    chunk_samples = max(1, int(round(args.chunk_ms * rate / 1000)))
    limit = int(round(args.seconds * rate)) if args.seconds > 0 else None
    device, chunks = open_microphone(library, rate, chunk_samples)
    stream = recognizer.create_stream("microphone")
    partials = PartialPrinter()
    heard = 0
    print("transcribe: listening; Ctrl-C to stop", file=sys.stderr)
    try:
        with device:
            while limit is None or heard < limit:
                chunk = chunks.get()
                chunk = chunk if limit is None else chunk[: limit - heard]
                heard += len(chunk)
                for segment in stream.feed(chunk):
                    partials.close()
                    print(segment.text, flush=True)
                partials.show("microphone", stream.partial())
    except KeyboardInterrupt:
        pass
    partials.close()
    printed = len(stream.segments)
    stream.finish()
    for segment in stream.segments[printed:]:
        print(segment.text, flush=True)
    return 0


# ---------------------------------------------------------------------------
# Writing results


class OutputWriter:
    """Writes transcripts to stdout (in input order) or one file per input and format."""

    def __init__(
        self,
        sources: Sequence[AudioSource],
        formats: Sequence[str],
        output_dir: str | None,
        stream: Any = None,
    ) -> None:
        self.sources = sources
        self.formats = list(formats)
        self.output_dir = Path(output_dir) if output_dir else None
        self.stream = stream or sys.stdout
        self._pending: dict[int, Transcript | None] = {}
        self._next = 0
        self._names = _output_names(sources)

    def add(self, index: int, transcript: Transcript | None) -> None:
        """Accepts source `index`'s transcript (None when it failed)."""
        if self.output_dir is not None:
            if transcript is not None:
                self._write_files(index, transcript)
            return
        self._pending[index] = transcript
        while self._next in self._pending:  # stdout keeps the inputs' order
            ready = self._pending.pop(self._next)
            if ready is not None:
                self._print(ready)
            self._next += 1

    def _print(self, transcript: Transcript) -> None:
        for output_format in self.formats:
            text = format_transcript(transcript, output_format)
            if output_format == "text" and len(self.sources) > 1:
                text = f"{transcript.source}\t{text}"
            self.stream.write(text.rstrip("\n") + "\n")
        self.stream.flush()

    def _write_files(self, index: int, transcript: Transcript) -> None:
        assert self.output_dir is not None
        for output_format in self.formats:
            target = self.output_dir / (self._names[index] + FILE_SUFFIXES[output_format])
            text = format_transcript(transcript, output_format).rstrip("\n") + "\n"
            atomic_write_text(target, text)


def _output_names(sources: Sequence[AudioSource]) -> list[str]:
    """File stems for the output folder: the source name without its audio suffix, unique."""
    names, seen = [], set()
    for source in sources:
        stem = source.output_name or source.name
        suffix = Path(stem).suffix
        if suffix.lower() in AUDIO_SUFFIXES:
            stem = stem[: -len(suffix)]
        stem = stem.lstrip("/").replace("..", "__") or "audio"
        candidate, number = stem, 1
        while candidate in seen:
            number += 1
            candidate = f"{stem}-{number}"
        seen.add(candidate)
        names.append(candidate)
    return names


# ---------------------------------------------------------------------------
# Command line


def register(subparsers: Any) -> None:
    """Adds the `transcribe` command to the `stenograph` command line."""
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files, folders or a manifest",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the transcribe options to `parser`."""
    parser.add_argument("model", help="experiment folder or exported SavedModel")
    parser.add_argument("inputs", nargs="*", help="audio files and folders (searched recursively)")
    parser.add_argument("--manifest", help="JSON-lines manifest of utterances to transcribe")
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept manifest audio paths outside the manifest's folder",
    )
    parser.add_argument(
        "--weights", default="best", help="experiment weights: best, last or a .weights.h5 file"
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        help="output format; repeat for several (default: text)",
    )
    parser.add_argument("--output-dir", help="write one file per input and format here")
    parser.add_argument(
        "--report",
        help="write the skipped inputs here as JSON lines (id, kind, reason, source, line); "
        f"default with --output-dir: <output-dir>/{REPORT_FILE}; written, empty when "
        "nothing failed, whenever either is given, else skipped inputs are only on stderr",
    )
    parser.add_argument(
        "--decoder",
        choices=("auto", "greedy", "beam", "lm"),
        default="auto",
        help="CTC decoding: best path, prefix beam search, or beam search with an LM; "
        "auto (default): the LM `stenograph lm tune` chose for the model if it has one, "
        "else greedy",
    )
    parser.add_argument("--beam-width", type=int, default=None, help="beam width (implies beam)")
    parser.add_argument(
        "--lm",
        dest="lm_path",
        help="KenLM model for --decoder lm (default: the one `stenograph lm tune` recorded "
        "in the model folder's decoding.json)",
    )
    parser.add_argument("--alpha", type=float, default=None, help="LM weight (default: tuned)")
    parser.add_argument(
        "--beta", type=float, default=None, help="word insertion bonus (default: tuned)"
    )
    parser.add_argument(
        "--unk-score-offset",
        type=float,
        default=None,
        help="score added per word outside the LM's word list "
        f"(default: tuned, else {DEFAULT_UNK_SCORE_OFFSET:g})",
    )
    parser.add_argument(
        "--hotword",
        action="append",
        default=[],
        help="WORD[:weight] to boost (repeatable); the beam search applies one boost to "
        "all hotwords, so give at most one weight",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="windows per model call")
    parser.add_argument("--window", type=float, default=20.0, help="window length in seconds")
    parser.add_argument("--overlap", type=float, default=2.0, help="window overlap in seconds")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="feed each file through a stream chunk by chunk (causal models), partial text "
        "on stderr",
    )
    parser.add_argument(
        "--chunk-ms",
        type=float,
        default=DEFAULT_CHUNK_MS,
        help="milliseconds of audio per chunk with --stream and --microphone",
    )
    parser.add_argument(
        "--microphone",
        action="store_true",
        help="transcribe the default input device until Ctrl-C (causal models; needs "
        f"sounddevice: {MIC_EXTRA_HINT})",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.0,
        help="with --microphone: stop after this many seconds of audio (0: at Ctrl-C)",
    )


def decoder_options(args: argparse.Namespace, tuned_lm: bool = False) -> dict[str, Any]:
    """Keyword arguments for `make_decoder` from parsed options (only those given).

    Args:
        args: The parsed options.
        tuned_lm: Whether the model folder has a tuned LM (what ``auto`` picks).
    """
    kind = args.decoder
    if kind == "auto":
        kind = "lm" if tuned_lm else "greedy"
    if args.beam_width is not None and kind == "greedy":
        kind = "beam"
    if args.lm_path and kind != "lm":
        kind = "lm"
    options: dict[str, Any] = {"kind": kind}
    for name in ("beam_width", "lm_path", "alpha", "beta", "unk_score_offset"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if args.hotword:
        options["hotwords"] = list(args.hotword)
    return options


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph transcribe`; returns the exit code (1 if any input failed)."""
    formats = args.formats or ["text"]
    if args.chunk_ms <= 0:
        print(f"transcribe: --chunk-ms must be > 0. Received: {args.chunk_ms}", file=sys.stderr)
        return 2
    if args.microphone:
        return _refusing_streaming_errors(run_microphone, args)
    sources, found = discover_sources(args.inputs, args.manifest, args.allow_outside_root)
    if not sources and not found:
        print("transcribe: give audio files, folders or --manifest", file=sys.stderr)
        return 2
    multi_file_subtitles = args.output_dir is None and len(sources) > 1
    if multi_file_subtitles and {"srt", "vtt"} & set(formats):
        print(
            "transcribe: SRT/VTT for several inputs need --output-dir (one file each)",
            file=sys.stderr,
        )
        return 2
    problems = ProblemReport(report_path(args))
    for problem in found:
        _report_problem(problem, problems)
    if args.stream:
        return _refusing_streaming_errors(run_stream, args, sources, formats, problems)
    from .decoding import describe_decoder, make_decoder, tuned_lm_available, with_tuned_defaults

    model = load_acoustic_model(args.model, args.weights)
    options = with_tuned_defaults(decoder_options(args, tuned_lm_available(args.model)), args.model)
    decoder = make_decoder(vocabulary=model.vocabulary, **options)
    print(f"transcribe: {describe_decoder(options)}", file=sys.stderr)
    writer = OutputWriter(sources, formats, args.output_dir)
    report = transcribe_sources(
        sources,
        model,
        decoder,
        on_transcript=writer.add,
        on_failure=lambda index, problem: (
            _report_problem(problem, problems),
            writer.add(index, None),
        ),
        window_config=WindowConfig(args.window, args.overlap, model.sample_rate),
        batch_size=args.batch_size,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    return _summarize(report, problems)


def report_path(args: argparse.Namespace) -> Path | None:
    """Where the skipped inputs go: `--report`, else `<output-dir>/transcribe_report.jsonl`."""
    if args.report:
        path = Path(args.report)
    elif args.output_dir:
        path = Path(args.output_dir) / REPORT_FILE
    else:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _summarize(report: TranscriptionReport, problems: ProblemReport) -> int:
    failed = len(problems)
    if failed and problems.path is not None:
        print(f"transcribe: skipped inputs listed in {problems.path}", file=sys.stderr)
    print(
        f"transcribe: {report.transcribed} transcribed, {failed} failed "
        f"({report.audio_seconds:.1f} s of audio)",
        file=sys.stderr,
    )
    return 1 if failed else 0


def _refusing_streaming_errors(function: Callable[..., int], *args: Any) -> int:
    """Runs `function`; a model that cannot stream or a missing microphone is one line, code 2."""
    try:
        return function(*args)
    except (StreamingUnavailableError, MicrophoneError) as error:
        print(f"transcribe: {error}", file=sys.stderr)
        return 2


def _report_problem(problem: Problem, problems: ProblemReport) -> None:
    """Prints a skipped input on stderr (as users read it) and adds it to the report."""
    print(f"transcribe: skipped {problem.label}: {problem.message}", file=sys.stderr)
    problems.add(problem)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command on its own (`python -m stenograph.recipes.transcribe`)."""
    parser = argparse.ArgumentParser(prog="stenograph transcribe", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "AudioSource",
    "OutputWriter",
    "TranscriptionReport",
    "discover_sources",
    "input_problem",
    "load_acoustic_model",
    "register",
    "transcribe_sources",
    "window_words",
]
