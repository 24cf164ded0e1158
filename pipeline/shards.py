"""Sharded corpora: TFRecord shards of ``tf.train.Example``s, decoded in the TensorFlow graph.

A corpus of many small audio files is slow to read from shared or cloud storage and
needs Python (libsndfile) for every utterance. ``write_shards`` decodes it once into
a few large TFRecord files; ``shard_source`` reads them back from any ``tf.io.gfile``
location (a local folder, ``gs://…``, ``ram://…``) with nothing but graph ops per
element, so the pipeline can also run on tf.data service workers.

Layout of a shard folder::

    index.json            counts, hours, bytes and SHA-256 of every shard (written last)
    utterances.jsonl      one line per manifest utterance: where it went, or why not
    shard-00000-of-00004.tfrecord ...

Each record is a ``tf.train.Example`` with these features (``FEATURE_KEYS``):

    id           bytes   utterance id
    audio        bytes   raw little-endian samples, mono, at ``sample_rate``
    encoding     bytes   "pcm16" (int16, x / 32768) or "float32"
    sample_rate  int64   Hz (the model's rate: audio is resampled when sharding)
    num_samples  int64   samples in ``audio``
    duration     float   seconds of audio (num_samples / sample_rate)
    text         bytes   the manifest transcript, as written
    text_normalized bytes the transcript after the index's ``normalizer``
    speaker      bytes   speaker id ("" if unknown)

Audio is decoded and resampled at shard time with the file pipeline's own
``load_audio``, so the samples are the ones the file pipeline would produce. With
``encoding="auto"`` an utterance is stored as 16-bit PCM when that holds its samples
exactly (16-bit sources at the model rate: lossless, 2 bytes a sample) and as
float32 otherwise (24-bit or float sources, resampled or down-mixed audio: 4 bytes a
sample, still bit-exact); ``"pcm16"`` always quantises to 16 bits (half the size,
lossy for those sources); ``"float32"`` never does.

Validation decisions are the file pipeline's (``pipeline.dataset``'s duration, empty
transcript and CTC-alignment checks); they are taken once, in Python, from
``utterances.jsonl`` when the dataset is built (the drop report is complete before
the first element), and the graph only filters out the ids they dropped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import heapq
import json
import logging
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from . import dataset as dataset_lib
from .audio import audio_info
from .dataset import DatasetConfig, Example
from .errors import Problem, ProblemCallback, ProblemReport
from .features import FeatureConfig
from .manifest import Utterance
from .text import TextNormalizer, Vocabulary

logger = logging.getLogger("stenograph.pipeline")

SHARDS_FORMAT = "stenograph.shards"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
UTTERANCES_FILE = "utterances.jsonl"
REPORT_FILE = "shard_report.jsonl"  # written by `stenograph shard`
ENCODINGS = ("auto", "pcm16", "float32")
PCM16_SCALE = 32768.0  # libsndfile's int16 -> float scale: x / 2**15

FEATURE_KEYS = (
    "id",
    "audio",
    "encoding",
    "sample_rate",
    "num_samples",
    "duration",
    "text",
    "text_normalized",
    "speaker",
)

_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "audio": tf.io.FixedLenFeature([], tf.string),
    "encoding": tf.io.FixedLenFeature([], tf.string),
    "sample_rate": tf.io.FixedLenFeature([], tf.int64),
    "num_samples": tf.io.FixedLenFeature([], tf.int64),
    "duration": tf.io.FixedLenFeature([], tf.float32),
    "text": tf.io.FixedLenFeature([], tf.string),
    "text_normalized": tf.io.FixedLenFeature([], tf.string),
    "speaker": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


# ---------------------------------------------------------------------------
# Planning and encoding (pure functions)
# ---------------------------------------------------------------------------


def plan_shards(seconds: Sequence[float], num_shards: int) -> list[int]:
    """Assigns items to shards balanced by duration: longest first into the lightest shard.

    Args:
        seconds: Each item's duration.
        num_shards: How many shards.

    Returns:
        The shard of each item, in the items' order.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1. Received: num_shards={num_shards}")
    loads = [(0.0, shard) for shard in range(num_shards)]  # a heap of (seconds, shard)
    assignment = [0] * len(seconds)
    for item in sorted(range(len(seconds)), key=lambda i: (-seconds[i], i)):
        load, shard = heapq.heappop(loads)
        assignment[item] = shard
        heapq.heappush(loads, (load + seconds[item], shard))
    return assignment


def encode_samples(waveform: np.ndarray, encoding: str = "auto") -> tuple[bytes, str]:
    """Raw little-endian bytes of a float32 waveform, and the encoding used.

    Args:
        waveform: ``[S]`` float32 in [-1, 1].
        encoding: ``"auto"`` (16-bit PCM when exact, else float32), ``"pcm16"``
            (always 16-bit, rounding) or ``"float32"``.

    Returns:
        ``(bytes, "pcm16" | "float32")``; `decode_audio_tf` inverts it.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}. Received: encoding={encoding!r}")
    waveform = np.asarray(waveform, np.float32)
    if encoding != "float32":
        # Multiplying by a power of two is exact in float32, so the round trip
        # below tells whether the samples are exactly 16-bit values.
        pcm = np.clip(np.rint(waveform * PCM16_SCALE), -32768, 32767).astype("<i2")
        if encoding == "pcm16" or np.array_equal(pcm.astype(np.float32) / PCM16_SCALE, waveform):
            return pcm.tobytes(), "pcm16"
    return waveform.astype("<f4").tobytes(), "float32"


def decode_audio_tf(audio: tf.Tensor, encoding: tf.Tensor) -> tf.Tensor:
    """Inverts `encode_samples` in the graph: scalar string tensors → float32 [S]."""

    def pcm16() -> tf.Tensor:
        samples = tf.io.decode_raw(audio, tf.int16, little_endian=True)  # [S]
        return tf.cast(samples, tf.float32) / PCM16_SCALE

    def float32() -> tf.Tensor:
        return tf.io.decode_raw(audio, tf.float32, little_endian=True)  # [S]

    return tf.cond(tf.equal(encoding, "pcm16"), pcm16, float32)


def shard_file_name(shard: int, num_shards: int) -> str:
    """E.g. ``shard-00003-of-00016.tfrecord``."""
    return f"shard-{shard:05d}-of-{num_shards:05d}.tfrecord"


def _join(folder: str, name: str) -> str:
    # tf.io.gfile paths use "/" on every filesystem, including gs:// and ram://.
    return posixpath.join(folder, name) if "://" in folder else os.path.join(folder, name)


# ---------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file as the index records it."""

    path: str
    utterances: int
    seconds: float
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """A shard folder's ``index.json``.

    Attributes:
        folder: Where the shards are (any ``tf.io.gfile`` location).
        sample_rate: Rate of every record's audio.
        encoding: The requested encoding (``"auto"``, ``"pcm16"`` or ``"float32"``).
        normalizer: ``TextNormalizer.get_config()`` behind ``text_normalized``.
        shards: One entry per shard file (``path`` relative to ``folder``).
        utterances: Utterances written.
        dropped: Manifest utterances that could not be decoded (in ``utterances.jsonl``).
        utterances_sha256: SHA-256 of ``utterances.jsonl``.
        source: The manifest the shards were written from.
    """

    folder: str
    sample_rate: int
    encoding: str
    normalizer: dict[str, Any]
    shards: tuple[ShardInfo, ...]
    utterances: int
    dropped: int
    utterances_sha256: str
    source: str = ""

    @property
    def hours(self) -> float:
        """Hours of audio in the shards."""
        return sum(shard.seconds for shard in self.shards) / 3600.0

    def files(self) -> list[str]:
        """Every shard file's full location, in shard order."""
        return [_join(self.folder, shard.path) for shard in self.shards]

    def to_json(self) -> dict[str, Any]:
        """The ``index.json`` document."""
        return {
            "format": SHARDS_FORMAT,
            "version": FORMAT_VERSION,
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "normalizer": self.normalizer,
            "utterances": self.utterances,
            "dropped": self.dropped,
            "hours": round(self.hours, 6),
            "source": self.source,
            "utterances_file": UTTERANCES_FILE,
            "utterances_sha256": self.utterances_sha256,
            "feature_keys": list(FEATURE_KEYS),
            "shards": [
                {**dataclasses.asdict(shard), "hours": round(shard.seconds / 3600.0, 6)}
                for shard in self.shards
            ],
        }

    @classmethod
    def load(cls, location: str | os.PathLike[str]) -> ShardIndex:
        """Reads ``index.json`` from a shard folder (or the file itself).

        Raises:
            ValueError: Naming the location if it holds no readable shard index.
        """
        location = os.fspath(location)
        path = location if location.endswith(".json") else _join(location, INDEX_FILE)
        try:
            with tf.io.gfile.GFile(path, "r") as f:
                document = json.loads(f.read())
        except (tf.errors.OpError, OSError, ValueError) as error:
            raise ValueError(f"cannot read shard index {path!r}: {error}") from None
        if not isinstance(document, dict) or document.get("format") != SHARDS_FORMAT:
            raise ValueError(f"{path!r} is not a stenograph shard index (no format marker)")
        if document.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"shard index {path!r} has version {document.get('version')}; this stenograph "
                f"reads version {FORMAT_VERSION}: write the shards again"
            )
        shards = tuple(
            ShardInfo(s["path"], s["utterances"], s["seconds"], s["bytes"], s["sha256"])
            for s in document["shards"]
        )
        return cls(
            folder=posixpath.dirname(path) if "://" in path else os.path.dirname(path),
            sample_rate=int(document["sample_rate"]),
            encoding=document["encoding"],
            normalizer=document["normalizer"],
            shards=shards,
            utterances=int(document["utterances"]),
            dropped=int(document["dropped"]),
            utterances_sha256=document["utterances_sha256"],
            source=document.get("source", ""),
        )

    def entries(self) -> list[dict[str, Any]]:
        """The lines of ``utterances.jsonl``, checked against the index's checksum."""
        path = _join(self.folder, UTTERANCES_FILE)
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != self.utterances_sha256:
            raise ValueError(
                f"{path!r} does not match its checksum in {INDEX_FILE}: the shard folder was "
                "changed or only partly copied"
            )
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]

    def manifest_utterances(self) -> list[Utterance]:
        """The manifest utterances behind the shards (for vocabularies, counts, durations)."""
        return [_utterance(entry) for entry in self.entries()]


def is_shard_index(location: str | os.PathLike[str]) -> bool:
    """Whether `location` is a shard folder or its ``index.json``."""
    location = os.fspath(location)
    path = location if location.endswith(".json") else _join(location, INDEX_FILE)
    if not tf.io.gfile.exists(path):
        return False
    try:
        ShardIndex.load(path)
    except ValueError:
        return False
    return True


def _utterance(entry: dict[str, Any]) -> Utterance:
    return Utterance(
        entry["id"],
        entry["audio_path"],
        entry["text"],
        duration=entry.get("duration"),
        offset=entry.get("offset", 0.0),
        speaker=entry.get("speaker"),
    )


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(
    utterance: Utterance,
    waveform: np.ndarray,
    sample_rate: int,
    normalizer: TextNormalizer,
    encoding: str = "auto",
) -> tuple[tf.train.Example, str]:
    """One record: the utterance's metadata and its samples; returns it and its encoding."""
    audio, used = encode_samples(waveform, encoding)
    feature = {
        "id": _bytes_feature(utterance.id.encode()),
        "audio": _bytes_feature(audio),
        "encoding": _bytes_feature(used.encode()),
        "sample_rate": _int_feature(sample_rate),
        "num_samples": _int_feature(int(waveform.size)),
        "duration": tf.train.Feature(
            float_list=tf.train.FloatList(value=[waveform.size / sample_rate])
        ),
        "text": _bytes_feature(utterance.text.encode()),
        "text_normalized": _bytes_feature(normalizer(utterance.text).encode()),
        "speaker": _bytes_feature((utterance.speaker or "").encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)), used


def planned_seconds(utterance: Utterance) -> float:
    """Duration used to balance the shards: the manifest's, else the file header's."""
    if utterance.duration is not None:
        return float(utterance.duration)
    try:
        info = audio_info(utterance.audio_path)
    except Exception:  # noqa: BLE001 - unreadable files weigh nothing; decoding reports them
        return 0.0
    return max(info.duration - utterance.offset, 0.0)


def decode_for_shard(utterance: Utterance, sample_rate: int) -> np.ndarray | Problem:
    """The utterance's samples as the file pipeline decodes them, or why it cannot be read.

    Uses the file pipeline's own decoder and problem kinds (``missing_audio``,
    ``unreadable_audio``, ``non_finite_samples``), so a shard folder's report says
    what ``make_dataset`` would.
    """
    loader = dataset_lib.UtteranceLoader(
        [utterance], None, FeatureConfig(sample_rate=sample_rate), DatasetConfig(), ProblemReport()
    )
    try:
        return loader._decode(utterance)
    except dataset_lib._DroppedError as dropped:
        return Problem(utterance.audio_path, None, dropped.kind, dropped.message, utterance.id)
    except Exception as error:  # noqa: BLE001 - one bad file never stops a run
        message = f"unexpected {type(error).__name__}: {error}"
        return Problem(utterance.audio_path, None, "unreadable_audio", message, utterance.id)


@dataclasses.dataclass
class _ShardWriter:
    path: str
    writer: Any
    utterances: int = 0
    samples: int = 0


def write_shards(
    utterances: Sequence[Utterance],
    folder: str | os.PathLike[str],
    num_shards: int,
    *,
    sample_rate: int = 16000,
    encoding: str = "auto",
    normalizer: TextNormalizer | None = None,
    on_problem: ProblemCallback | None = None,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    threads: int | None = None,
    source: str = "",
) -> ShardIndex:
    """Writes a corpus as TFRecord shards balanced by duration, then their index.

    Every shard is written to a temporary name and renamed when complete; the index
    is written last, also atomically, so a folder with an ``index.json`` is complete.

    Args:
        utterances: The corpus (ids must be unique).
        folder: Output location (local, ``gs://…``, ``ram://…``); created if missing.
        num_shards: Shard files to write (at least the number of readers you plan:
            multi-worker training and the tf.data service split work by file).
        sample_rate: The model's rate; audio is resampled to it here.
        encoding: See `encode_samples`.
        normalizer: Produces ``text_normalized`` (default: ``TextNormalizer()``, the
            one ``stenograph train`` builds vocabularies with).
        on_problem: Receives every utterance that cannot be decoded; it is left out.
        progress: Wraps the decode loop, e.g. ``lambda items, total: tqdm(items, total=total)``.
        threads: Parallel decoders (default: the CPU cores).
        source: The manifest's path, recorded in the index.

    Returns:
        The written index.
    """
    folder = os.fspath(folder)
    normalizer = normalizer or TextNormalizer()
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}. Received: encoding={encoding!r}")
    ids = [u.id for u in utterances]
    if len(set(ids)) != len(ids):
        raise ValueError("write_shards needs unique utterance ids; the manifest repeats some")
    tf.io.gfile.makedirs(folder)
    assignment = plan_shards([planned_seconds(u) for u in utterances], num_shards)
    writers = [
        _ShardWriter(_join(folder, shard_file_name(shard, num_shards)), None)
        for shard in range(num_shards)
    ]
    for shard in writers:
        shard.writer = tf.io.TFRecordWriter(_temporary(shard.path))
    entries: list[dict[str, Any]] = []
    decoded = _decode_all(utterances, sample_rate, threads or dataset_lib.cpu_cores())
    if progress is not None:
        decoded = progress(decoded, len(utterances))
    for utterance, shard, result in zip(utterances, assignment, decoded, strict=True):
        entry = {**utterance.to_dict(), "shard": None}
        if isinstance(result, Problem):
            entry["problem"] = {"kind": result.kind, "message": result.message}
            if on_problem is not None:
                on_problem(result)
        else:
            example, used = make_example(utterance, result, sample_rate, normalizer, encoding)
            writers[shard].writer.write(example.SerializeToString())
            writers[shard].utterances += 1
            writers[shard].samples += int(result.size)
            entry.update(shard=shard, samples=int(result.size), encoding=used)
        entries.append(entry)
    infos = [_finish_shard(shard, sample_rate, folder) for shard in writers]
    listing = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode("utf-8")
    _write_atomic(_join(folder, UTTERANCES_FILE), listing)
    index = ShardIndex(
        folder=folder,
        sample_rate=sample_rate,
        encoding=encoding,
        normalizer=normalizer.get_config(),
        shards=tuple(infos),
        utterances=sum(info.utterances for info in infos),
        dropped=sum(1 for e in entries if e["shard"] is None),
        utterances_sha256=hashlib.sha256(listing).hexdigest(),
        source=source,
    )
    document = json.dumps(index.to_json(), ensure_ascii=False, indent=1) + "\n"
    _write_atomic(_join(folder, INDEX_FILE), document.encode("utf-8"))
    return index


def _decode_all(
    utterances: Sequence[Utterance], sample_rate: int, threads: int
) -> Iterator[np.ndarray | Problem]:
    """Decoded utterances in order, `threads` at a time (libsndfile and soxr release the GIL)."""
    chunk = max(64, 16 * threads)  # bounds memory: only this many waveforms wait at once
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(utterances), chunk):
            part = utterances[start : start + chunk]
            yield from pool.map(lambda u: decode_for_shard(u, sample_rate), part)


def _temporary(path: str) -> str:
    return f"{path}.tmp{os.getpid()}"


def _finish_shard(shard: _ShardWriter, sample_rate: int, folder: str) -> ShardInfo:
    shard.writer.close()
    tf.io.gfile.rename(_temporary(shard.path), shard.path, overwrite=True)
    digest, size = _sha256(shard.path)
    return ShardInfo(
        path=posixpath.basename(shard.path),
        utterances=shard.utterances,
        seconds=round(shard.samples / sample_rate, 3),
        bytes=size,
        sha256=digest,
    )


def _sha256(path: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _write_atomic(path: str, data: bytes) -> None:
    temporary = _temporary(path)
    with tf.io.gfile.GFile(temporary, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def verify_shards(index: ShardIndex) -> list[str]:
    """Shard files whose size or SHA-256 differs from the index (empty: all intact)."""
    bad = []
    for info, path in zip(index.shards, index.files(), strict=True):
        if not tf.io.gfile.exists(path) or _sha256(path) != (info.sha256, info.bytes):
            bad.append(path)
    return bad


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shards:
    """A shard folder as a dataset source, and how to read it.

    Attributes:
        location: The shard folder or its ``index.json`` (any ``tf.io.gfile`` location).
        deterministic: Keep one order for a given seed (interleave and parallel maps
            wait for the element whose turn it is); ``False`` lets a slow file or
            element be overtaken, which is faster on remote storage.
        cycle_length: Shard files read at once (interleaved).
    """

    location: str
    deterministic: bool = True
    cycle_length: int = 4

    def index(self) -> ShardIndex:
        """The folder's index."""
        return ShardIndex.load(self.location)


def files_for_pipeline(
    files: Sequence[str], input_context: tf.distribute.InputContext | None
) -> list[str]:
    """This input pipeline's shard files: every n-th file under multi-worker training.

    Raises:
        ValueError: If there are fewer files than input pipelines (a worker would
            have none).
    """
    if input_context is None or input_context.num_input_pipelines <= 1:
        return list(files)
    pipelines, position = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) < pipelines:
        raise ValueError(
            f"{pipelines} input pipelines need at least as many shard files; the folder has "
            f"{len(files)}. Write the shards again with --shards {pipelines} or more"
        )
    return list(files[position::pipelines])


def drop_decisions(
    entries: Iterable[dict[str, Any]],
    vocabulary: Vocabulary,
    feature_config: FeatureConfig,
    config: DatasetConfig,
) -> list[Problem]:
    """What the file pipeline would drop among these utterances, and why.

    The same checks in the same order as ``UtteranceLoader``: empty transcript, the
    manifest's duration, decoding (recorded when sharding), the decoded duration,
    then CTC alignment.
    """
    problems = []
    for entry in entries:
        kind_message = _drop_reason(entry, vocabulary, feature_config, config)
        if kind_message is not None:
            kind, message = kind_message
            problems.append(Problem(entry["audio_path"], None, kind, message, entry["id"]))
    return problems


def _drop_reason(
    entry: dict[str, Any],
    vocabulary: Vocabulary,
    feature_config: FeatureConfig,
    config: DatasetConfig,
) -> tuple[str, str] | None:
    labels = vocabulary.encode(entry["text"])
    if not labels:
        return "empty_transcript", f"transcript has no known characters: {entry['text']!r:.80}"
    duration = entry.get("duration")
    if duration is not None:
        problem = dataset_lib.duration_problem(duration, config.min_duration, config.max_duration)
        if problem:
            return "duration_out_of_range", problem
    if entry.get("problem"):
        return entry["problem"]["kind"], entry["problem"]["message"]
    seconds = entry["samples"] / feature_config.sample_rate
    problem = dataset_lib.duration_problem(seconds, config.min_duration, config.max_duration)
    if problem:
        return "duration_out_of_range", problem
    if config.drop_unalignable:
        problem = dataset_lib.alignment_problem(
            labels, entry["samples"], feature_config, config.time_reduction
        )
        if problem:
            return "transcript_too_long", problem
    return None


def text_feature(index: ShardIndex, vocabulary: Vocabulary) -> str:
    """The record text the graph encodes: normalised as the vocabulary would, or raw.

    Raises:
        ValueError: If the vocabulary normalises differently from the shards.
    """
    if vocabulary.normalizer is None:
        return "text"
    if vocabulary.normalizer.get_config() == index.normalizer:
        return "text_normalized"
    raise ValueError(
        "the vocabulary normalises transcripts differently from the shards "
        f"(vocabulary: {vocabulary.normalizer.get_config()}, shards: {index.normalizer}); "
        "write the shards again with the vocabulary's normaliser (stenograph shard --vocabulary)"
    )


def shard_source(
    shards: Shards | str,
    vocabulary: Vocabulary,
    feature_config: FeatureConfig,
    config: DatasetConfig | None = None,
    *,
    input_context: tf.distribute.InputContext | None = None,
    report: ProblemReport | None = None,
) -> tf.data.Dataset:
    """Decoded, validated utterances (``Example``) from shards: ``decoded_source``'s twin.

    Reads the shard files interleaved; with ``config.shuffle`` (and no cache) the
    file order is permuted per ``config.seed`` and records pass a
    ``config.shuffle_buffer_size`` shuffle buffer before parsing. Under multi-worker
    training each input pipeline reads every n-th file (disjoint shards). Every
    per-element step is a graph op, so the pipeline can run on tf.data service
    workers; the file list starts the pipeline, so the service's
    ``distributed_epoch`` mode hands out whole shard files.

    Args:
        shards: A ``Shards`` (or a folder / ``index.json`` location).
        vocabulary: Encodes transcripts (in the graph, from the records).
        feature_config: The model's features; its sample rate must be the shards'.
        config: Validation, shuffling and caching settings.
        input_context: From ``tf.distribute``; selects this pipeline's files.
        report: Receives the dropped utterances of these files (all of them, when
            the dataset is built).

    Returns:
        A dataset of ``Example`` (seeds not yet attached).
    """
    config = config or DatasetConfig()
    shards = Shards(shards) if isinstance(shards, str | os.PathLike) else shards
    index = shards.index()
    if index.sample_rate != feature_config.sample_rate:
        raise ValueError(
            f"the shards in {index.folder!r} hold {index.sample_rate} Hz audio but the features "
            f"expect {feature_config.sample_rate} Hz; write them again with that --sample-rate"
        )
    text_key = text_feature(index, vocabulary)
    files = files_for_pipeline(index.files(), input_context)
    report = ProblemReport(config.report_path, log=True) if report is None else report
    dropped = _report_drops(index, set(files), vocabulary, feature_config, config, report)
    shuffle = config.shuffle and config.cache is None
    if shuffle:
        # In Python, not with Dataset.shuffle: the tf.data service's distributed_epoch
        # mode duplicated every file when the file list was shuffled in the graph.
        files = [files[i] for i in np.random.default_rng(config.seed).permutation(len(files))]
    parallel = dataset_lib._parallelism(config)
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(shards.cycle_length, len(files))),
        num_parallel_calls=parallel,
        deterministic=shards.deterministic,
    )
    if shuffle:
        dataset = dataset.shuffle(
            config.shuffle_buffer_size, seed=config.seed, reshuffle_each_iteration=True
        )
    dataset = dataset.map(
        record_parser(vocabulary, text_key, dropped),
        num_parallel_calls=parallel,
        deterministic=shards.deterministic,
    )
    dataset = dataset.filter(dataset_lib._is_kept).map(dataset_lib._drop_flag)
    if config.cache is not None:
        dataset = dataset.cache("" if config.cache == "memory" else config.cache)
    return dataset


def _report_drops(
    index: ShardIndex,
    files: set[str],
    vocabulary: Vocabulary,
    feature_config: FeatureConfig,
    config: DatasetConfig,
    report: ProblemReport,
) -> list[str]:
    """Reports the drops among the utterances of `files`; returns the dropped ids in shards."""
    all_files = index.files()
    read_everything = len(files) == len(all_files)
    chosen = {i for i, path in enumerate(all_files) if path in files}
    entries = [
        entry
        for entry in index.entries()
        # Undecodable utterances are in no shard; the pipeline that reads
        # everything (or the first one) reports them.
        if entry["shard"] in chosen or (entry["shard"] is None and (read_everything or 0 in chosen))
    ]
    problems = drop_decisions(entries, vocabulary, feature_config, config)
    for problem in problems:
        report.add(problem)
    in_shards = {entry["id"] for entry in entries if entry["shard"] is not None}
    return [problem.item_id for problem in problems if problem.item_id in in_shards]


def record_parser(
    vocabulary: Vocabulary, text_key: str, dropped_ids: Sequence[str]
) -> Callable[[tf.Tensor], tuple[Example, tf.Tensor]]:
    """Serialized record → ``(Example, kept)``, in graph ops only."""
    dropped = tf.constant(list(dropped_ids), tf.string, shape=[len(dropped_ids)])

    def parse(record: tf.Tensor) -> tuple[Example, tf.Tensor]:
        fields = tf.io.parse_single_example(record, _FEATURES)
        waveform = decode_audio_tf(fields["audio"], fields["encoding"])  # [S]
        labels = vocabulary.encode_tf(tf.reshape(fields[text_key], [1])).flat_values  # [L]
        repeats = tf.reduce_sum(tf.cast(tf.equal(labels[1:], labels[:-1]), tf.int32))
        utterance_id = fields["id"]
        example = Example(
            waveform=waveform,
            num_samples=tf.shape(waveform)[0],
            labels=labels,
            label_length=tf.shape(labels)[0],
            min_frames=tf.shape(labels)[0] + repeats,  # ctc_min_frames, in the graph
            utterance_id=utterance_id,
            seed=tf.zeros([2], tf.int64),
        )
        kept = tf.logical_not(tf.reduce_any(tf.equal(dropped, utterance_id)))
        return example, kept

    return parse


__all__ = [
    "FEATURE_KEYS",
    "INDEX_FILE",
    "REPORT_FILE",
    "ShardIndex",
    "ShardInfo",
    "Shards",
    "UTTERANCES_FILE",
    "decode_audio_tf",
    "decode_for_shard",
    "drop_decisions",
    "encode_samples",
    "files_for_pipeline",
    "is_shard_index",
    "make_example",
    "plan_shards",
    "shard_source",
    "verify_shards",
    "write_shards",
]
