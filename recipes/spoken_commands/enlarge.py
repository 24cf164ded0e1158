"""More training speech at run time: fresh utterances from the installed TTS engines.

The shipped corpus is half an hour of speech, kept small for git. When the
engines are installed, `stenograph demo` adds freshly generated TRAINING
utterances to it:

- only training speakers speak them (`splits.speaker_split(...) == "train"`), the
  shipped corpus's training voices plus extra espeak-ng variants that no split
  has used (`EXTRA_ESPEAK_VARIANTS`), so every dev and test speaker stays unheard;
- the sentences are new draws from the grammar, never a dev or test sentence of
  the corpus they enlarge (and not its training sentences either: new text too),
  unless `max_repeats` > 1: then the word balancing may pick a sentence several
  times, the corpus's training sentences included, each time with another voice,
  because some words live in only a few short sentences;
- each utterance gets the generator's variety (rate, pitch, vocal-tract warp,
  tempo, level; reverberation, telephone band and noise on a share of them).

Everything is drawn from a seed, so the same request gives the same files. The
result is cached in a folder with a `done.json` that records the request; the
same request reuses it.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stenograph.pipeline.manifest import Utterance, read_manifest, write_manifest

from .generate import (
    DEFAULT_ENGINE_WEIGHTS,
    UtteranceJob,
    VarietyConfig,
    _run_jobs,
    choose_voice,
    draw_rendering,
    job_utterance,
)
from .grammar import Sentence, generate_sentences
from .splits import speaker_split
from .voices import Voice, installed_voices, missing_packages

# The shipped corpus was drawn with seed 0; a different default seed gives other
# renderings even where a grammar draw repeats.
DEFAULT_SEED = 1000
MAX_WORDS = 6  # as the shipped corpus (utterances of 0.6-3.4 s)
DONE_FILE = "done.json"
CACHE_MARKER = ".stenograph-cache"
MANIFEST = "train.jsonl"

# espeak-ng variants with human-like settings that the shipped corpus does not use
# (its catalogue is `voices.ESPEAK_VARIANTS`). They are training speakers: none is
# a dev or test speaker. Robot, whisper, croak and effect variants are left out.
EXTRA_ESPEAK_VARIANTS = (
    "Alicia",
    "Andrea",
    "Denis",
    "Diogo",
    "Gene",
    "Gene2",
    "Henrique",
    "Hugo",
    "Jacky",
    "Lee",
    "Marco",
    "Mario",
    "Michael",
    "Mike",
    "Nguyen",
    "boris",
    "caleb",
    "david",
    "ed",
    "edward2",
    "grandma",
    "grandpa",
    "gustave",
    "iven",
    "iven2",
    "iven3",
    "iven4",
    "john",
    "klatt5",
    "klatt6",
    "m8",
    "marcelo",
    "miguel",
    "norbert",
    "pablo",
    "pedro",
    "quincy",
    "rob",
    "sandro",
    "shelby",
    "steph2",
    "steph3",
    "travis",
    "victor",
)
# Engine shares of the extra utterances: the shipped corpus's (espeak-ng 0.5,
# festival 0.25, flite 0.25) unless chosen otherwise on dev (see RESULTS.md).
EXTRA_ENGINE_WEIGHTS = dict(DEFAULT_ENGINE_WEIGHTS)
_EXTRA_FEMALE = frozenset({"Alicia", "Andrea", "grandma", "shelby", "steph2", "steph3"})


@dataclass(frozen=True)
class EnlargeRequest:
    """What to generate; the cache is reused only for an identical request.

    Attributes:
        num_utterances: New training utterances (one per new sentence).
        seed: Seed of every random choice.
        extra_variants: Also use `EXTRA_ESPEAK_VARIANTS` as training speakers.
        max_words: Longest sentence in words.
        voices: Only these voices: engines, speakers or keys as in
            `voices.select_voices` ("espeak-ng", "rms", "flite/kal16"); None = all.
        engine_weights: Relative share of each engine's utterances.
        max_repeats: How many utterances may share one sentence (each with its
            own voice and rendering); more than 1 lets the word balancing repeat
            the few sentences that carry the grammar's rarest words, the corpus's
            training sentences among them (dev and test sentences never).
    """

    num_utterances: int
    seed: int = DEFAULT_SEED
    extra_variants: bool = True
    max_words: int = MAX_WORDS
    voices: tuple[str, ...] | None = None
    engine_weights: dict[str, float] = field(default_factory=lambda: dict(EXTRA_ENGINE_WEIGHTS))
    max_repeats: int = 1


def extra_espeak_voices(accents: Sequence[str] | None = None) -> list[Voice]:
    """Voices of `EXTRA_ESPEAK_VARIANTS` with every English accent of the catalogue."""
    from .voices import ESPEAK_ACCENTS

    return [
        Voice("espeak-ng", f"{accent}+{variant}", f"espeak-{variant}", variant in _EXTRA_FEMALE)
        for accent in (accents or ESPEAK_ACCENTS)
        for variant in EXTRA_ESPEAK_VARIANTS
    ]


def training_voices(
    extra_variants: bool = True, selectors: Sequence[str] | None = None
) -> list[Voice]:
    """Installed voices of training speakers only (no dev or test speaker, ever).

    Args:
        extra_variants: Add `EXTRA_ESPEAK_VARIANTS` when espeak-ng is installed.
        selectors: Keep only voices matching one of these engines, speakers or
            keys; None keeps all.

    Returns:
        The voices; empty when no engine (or sox) is installed.
    """
    if shutil.which("sox") is None:
        return []
    voices = installed_voices()
    if extra_variants and any(v.engine == "espeak-ng" for v in voices):
        voices += extra_espeak_voices()
    if selectors is not None:
        voices = [v for v in voices if {v.engine, v.speaker, v.key} & set(selectors)]
    return [v for v in voices if speaker_split(v.speaker) == "train"]


def engines_unavailable_reason(
    extra_variants: bool = True, selectors: Sequence[str] | None = None
) -> str | None:
    """None when training voices can be synthesized, else a one-line reason."""
    if training_voices(extra_variants, selectors):
        return None
    packages = " ".join(missing_packages()) or "sox espeak-ng"
    return (
        "no text-to-speech engine is installed, so training uses the shipped corpus alone "
        f"(for more training speech: apt-get install -y {packages})"
    )


def new_sentences(
    count: int,
    seed: int,
    exclude: Iterable[str],
    max_words: int = MAX_WORDS,
    max_repeats: int = 1,
) -> list[Sentence]:
    """Draws `count` word-balanced grammar sentences, none of them in `exclude`.

    Args:
        count: How many sentences.
        seed: Seed of the grammar's draws.
        exclude: Sentences never to return (the dev and test sentences, and the
            training sentences already spoken).
        max_words: Longest sentence in words.
        max_repeats: How often one sentence may be drawn (by different voices).

    Returns:
        The sentences, word-balanced as `grammar.generate_sentences` makes them.

    Raises:
        ValueError: If the grammar cannot give that many new sentences.
    """
    excluded = set(exclude)
    room = 20_000 - len(excluded)  # the grammar's draw limit, counting the excluded
    fresh = []
    if 0 < count <= room * max_repeats:
        fresh = generate_sentences(min(count, 20_000), seed, max_words, True, max_repeats, excluded)
    if len(fresh) < count:
        raise ValueError(
            f"The grammar gave only {len(fresh)} sentences outside the {len(excluded)} "
            f"excluded ones. Received: count={count}"
        )
    return fresh


def plan_training_jobs(
    voices: Sequence[Voice],
    sentences: Sequence[Sentence],
    seed: int,
    variety: VarietyConfig | None = None,
    engine_weights: dict[str, float] | None = None,
) -> list[UtteranceJob]:
    """One training utterance per sentence, each by a training voice with its rendering.

    Raises:
        ValueError: If a voice of a dev or test speaker is passed (they are held out).
    """
    held_out = sorted({v.key for v in voices if speaker_split(v.speaker) != "train"})
    if held_out:
        raise ValueError(f"Held-out speakers cannot speak training data. Received: {held_out}")
    variety = variety or VarietyConfig()
    rng = random.Random(seed + 1)
    fraction = variety.augment_fraction.get("train", 0.0)
    jobs = []
    for index, sentence in enumerate(sentences):
        voice = choose_voice(voices, engine_weights or DEFAULT_ENGINE_WEIGHTS, rng)
        rendering = draw_rendering(voice, rng.random() < fraction, variety, rng)
        utterance_id = f"gen{seed}-{index:06d}"
        audio_path = f"audio/{utterance_id}.flac"
        jobs.append(
            UtteranceJob(utterance_id, "train", sentence.text, voice, rendering, audio_path)
        )
    return jobs


def corpus_sentences(
    corpus_dir: Path, splits: Sequence[str] = ("train", "dev", "test")
) -> set[str]:
    """Every sentence of a corpus's manifests of these splits."""
    texts: set[str] = set()
    for split in splits:
        manifest = corpus_dir / f"{split}.jsonl"
        if manifest.is_file():
            texts |= {u.text for u in read_manifest(manifest)}
    return texts


def cached_manifest(cache_dir: Path, request: EnlargeRequest) -> Path | None:
    """The manifest of a finished generation for this very request, else None."""
    done = cache_dir / DONE_FILE
    if not done.is_file():
        return None
    recorded = json.loads(done.read_text(encoding="utf-8"))
    # Through JSON, as it was stored (tuples come back as lists).
    if recorded.get("request") != json.loads(json.dumps(asdict(request))):
        return None
    return cache_dir / MANIFEST


def enlarge_training_set(
    cache_dir: str | Path,
    corpus_dir: str | Path,
    request: EnlargeRequest,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Generates (or reuses) extra training utterances for a corpus.

    Args:
        cache_dir: Where the FLAC files, `train.jsonl` and `done.json` go. A
            different earlier request there is replaced.
        corpus_dir: The corpus being enlarged; none of its sentences is drawn.
        request: How many utterances, the seed, the voices.
        workers: Parallel synthesis processes.
        progress: Show a progress bar on stderr.

    Returns:
        `{"manifest", "utterances", "seconds", "reused", "failures", "speakers"}`.

    Raises:
        RuntimeError: If no training voice can be synthesized (the message names
            the packages) or every utterance failed.
    """
    cache_dir = Path(cache_dir)
    started = time.monotonic()
    manifest = cached_manifest(cache_dir, request)
    if manifest is not None:
        utterances = read_manifest(manifest)
        return _result(manifest, utterances, time.monotonic() - started, True, 0)
    reason = engines_unavailable_reason(request.extra_variants, request.voices)
    if reason is not None:
        raise RuntimeError(reason)
    # Repeats may say the corpus's training sentences again, with other voices:
    # some words occur in only a few sentences, and those are often all taken.
    held_out = ("dev", "test") if request.max_repeats > 1 else ("train", "dev", "test")
    sentences = new_sentences(
        request.num_utterances,
        request.seed,
        corpus_sentences(Path(corpus_dir), held_out),
        request.max_words,
        request.max_repeats,
    )
    voices = training_voices(request.extra_variants, request.voices)
    jobs = plan_training_jobs(voices, sentences, request.seed, None, request.engine_weights)
    _clear_cache(cache_dir)
    results = _run_jobs(jobs, str(cache_dir), workers, chunk_size=16, progress=progress)
    durations = {r["id"]: r["duration"] for r in results if "duration" in r}
    failures = [r for r in results if "error" in r]
    if not durations:
        raise RuntimeError(f"Every generated utterance failed; first error: {failures[0]['error']}")
    utterances = [
        job_utterance(job, cache_dir, durations[job.utterance_id])
        for job in jobs
        if job.utterance_id in durations
    ]
    manifest = cache_dir / MANIFEST
    write_manifest(manifest, utterances)
    renderings = [
        json.dumps({"id": j.utterance_id, "voice": j.voice.key, **asdict(j.rendering)}) + "\n"
        for j in jobs
        if j.utterance_id in durations
    ]
    (cache_dir / "renderings.jsonl").write_text("".join(renderings), encoding="utf-8")
    seconds = time.monotonic() - started
    record = {"request": asdict(request), "seconds": round(seconds, 1), "failures": failures}
    (cache_dir / DONE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return _result(manifest, utterances, seconds, False, len(failures))


def _clear_cache(cache_dir: Path) -> None:
    """Empties a cache of an earlier request; refuses a folder that is not a cache.

    Raises:
        FileExistsError: If `cache_dir` holds files but is not such a cache.
    """
    ours = (cache_dir / CACHE_MARKER).is_file()
    if cache_dir.is_dir() and any(cache_dir.iterdir()) and not ours:
        raise FileExistsError(
            f"{cache_dir} is not empty and holds no generated training data; choose an "
            f"empty or new folder for it. Received: cache_dir={str(cache_dir)!r}"
        )
    for name in (DONE_FILE, MANIFEST, "renderings.jsonl"):
        (cache_dir / name).unlink(missing_ok=True)
    if (cache_dir / "audio").is_dir():
        shutil.rmtree(cache_dir / "audio")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Marks the folder as ours, so an interrupted generation can be replaced.
    (cache_dir / CACHE_MARKER).write_text("stenograph commands enlarge cache\n")


def _result(
    manifest: Path, utterances: list[Utterance], seconds: float, reused: bool, failures: int
) -> dict[str, Any]:
    return {
        "manifest": str(manifest),
        "utterances": len(utterances),
        "minutes_of_speech": round(sum(u.duration or 0.0 for u in utterances) / 60.0, 1),
        "seconds": round(seconds, 1),
        "reused": reused,
        "failures": failures,
        "speakers": len({u.speaker for u in utterances}),
    }
