"""Generates the spoken-commands corpus with the Debian text-to-speech engines.

Usage:
    python -m stenograph.recipes.spoken_commands.generate --out data/commands \
        --num-sentences 2000 --seed 0 --workers 2

Writes `train.jsonl`, `dev.jsonl` and `test.jsonl` (one utterance per line: id,
audio_path relative to the manifest, text, duration, offset, speaker), FLAC files
under `audio/<split>/` (16 kHz, mono, 16-bit), `renderings.jsonl` (how each
utterance was rendered: voice, prosody, effects) and `corpus.json` (settings,
engine versions and statistics).

Each sentence is spoken once per `--utterances-per-sentence` by a voice of its
split's speakers, with a speaking rate, pitch, vocal-tract length (a VTLP-style
formant warp), tempo and loudness drawn for it; a fraction of utterances is also
reverberated, band-limited to the telephone band and/or mixed with noise. All
random choices are drawn up front from `--seed`, so the same command gives the
same corpus however many workers render it.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from stenograph.pipeline.manifest import Utterance, write_manifest

from . import effects
from .grammar import generate_sentences
from .splits import SPLITS, speaker_split, split_sentences
from .voices import Prosody, SynthesisRequest, Voice, select_voices, synthesize

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
DEFAULT_ENGINE_WEIGHTS = {"espeak-ng": 0.5, "festival": 0.25, "flite": 0.25}
HTS_VOICE = "voice_cmu_us_slt_arctic_hts"
MIN_DURATION_SECONDS = 0.3
DESCRIPTION = "Generate the spoken-commands corpus with espeak-ng, festival and flite."


@dataclass(frozen=True)
class VarietyConfig:
    """Ranges of the per-utterance random choices.

    Attributes:
        rate: Engine speaking rate relative to the voice default (min, max).
        word_gap: Extra espeak-ng pause between words, 10 ms units (min, max).
        formant_warp: VTLP warp factor range; 1.0 keeps the vocal tract.
        formant_warp_probability: Share of utterances whose formants are warped.
        pitch_shift_cents: Maximum sox pitch shift (moves pitch and formants).
        pitch_shift_probability: Share of utterances pitch-shifted with sox.
        tempo: sox tempo factor range (duration without pitch change).
        tempo_probability: Share of utterances whose tempo is changed with sox.
        level_dbfs: Active-speech RMS level range in dBFS.
        augment_fraction: Share of utterances per split that get at least one of
            reverberation, telephone band or noise.
        reverb_probability: Given augmentation, chance of reverberation.
        rt60: Reverberation time range, seconds.
        direct_to_reverberant_db: Direct-to-reverberant ratio range, dB.
        telephone_probability: Given augmentation, chance of the telephone band.
        noise_probability: Given augmentation, chance of added noise.
        snr_db: Signal-to-noise ratio range, dB.
        pad_seconds: Silence kept before and after the speech (min, max).
    """

    rate: tuple[float, float] = (0.85, 1.35)
    word_gap: tuple[int, int] = (0, 4)
    formant_warp: tuple[float, float] = (0.86, 1.16)
    formant_warp_probability: float = 0.8
    pitch_shift_cents: float = 250.0
    pitch_shift_probability: float = 0.3
    tempo: tuple[float, float] = (0.85, 1.15)
    tempo_probability: float = 0.3
    level_dbfs: tuple[float, float] = (-40.0, -22.0)
    augment_fraction: dict[str, float] = field(
        default_factory=lambda: {"train": 0.35, "dev": 0.2, "test": 0.2}
    )
    reverb_probability: float = 0.5
    rt60: tuple[float, float] = (0.15, 0.7)
    direct_to_reverberant_db: tuple[float, float] = (-2.0, 12.0)
    telephone_probability: float = 0.3
    noise_probability: float = 0.4
    snr_db: tuple[float, float] = (10.0, 30.0)
    pad_seconds: tuple[float, float] = (0.03, 0.2)


@dataclass(frozen=True)
class Rendering:
    """Every random choice for one utterance (stored in renderings.jsonl)."""

    prosody: Prosody
    formant_warp: float
    pitch_shift_cents: float
    tempo: float
    level_dbfs: float
    reverb_rt60: float | None
    reverb_drr_db: float
    telephone: bool
    mu_law: bool
    noise_snr_db: float | None
    noise_color: str
    lead_pad: float
    tail_pad: float
    seed: int


@dataclass(frozen=True)
class UtteranceJob:
    """One utterance to render: what to say, who says it, how, and where it goes."""

    utterance_id: str
    split: str
    text: str
    voice: Voice
    rendering: Rendering
    audio_path: str


def _chance(rng: random.Random, probability: float) -> bool:
    return rng.random() < probability


def draw_rendering(
    voice: Voice, augment: bool, config: VarietyConfig, rng: random.Random
) -> Rendering:
    """Draws the rendering of one utterance (a pure function of its arguments).

    The HTS voice has no pitch control in festival, so its engine pitch becomes
    a sox pitch shift instead (about +-350 cents around its own F0).

    Args:
        voice: The voice that speaks.
        augment: Whether to add reverberation, telephone band and/or noise.
        config: The ranges.
        rng: Random generator, advanced by the draw.

    Returns:
        The rendering.
    """
    prosody = Prosody(
        rate=round(rng.uniform(*config.rate), 3),
        pitch=round(rng.uniform(-1.0, 1.0), 3),
        word_gap=rng.randint(*config.word_gap) if voice.engine == "espeak-ng" else 0,
    )
    warp = rng.uniform(*config.formant_warp)
    formant_warp = round(warp, 3) if _chance(rng, config.formant_warp_probability) else 1.0
    shift = rng.uniform(-config.pitch_shift_cents, config.pitch_shift_cents)
    pitch_shift = round(shift) if _chance(rng, config.pitch_shift_probability) else 0.0
    if voice.name == HTS_VOICE:
        pitch_shift = round(pitch_shift + 350.0 * prosody.pitch)
    tempo = round(rng.uniform(*config.tempo), 3) if _chance(rng, config.tempo_probability) else 1.0
    reverb = telephone = noise = False
    if augment:
        while not (reverb or telephone or noise):
            reverb = _chance(rng, config.reverb_probability)
            telephone = _chance(rng, config.telephone_probability)
            noise = _chance(rng, config.noise_probability)
    return Rendering(
        prosody=prosody,
        formant_warp=formant_warp,
        pitch_shift_cents=float(pitch_shift),
        tempo=tempo,
        level_dbfs=round(rng.uniform(*config.level_dbfs), 1),
        reverb_rt60=round(rng.uniform(*config.rt60), 3) if reverb else None,
        reverb_drr_db=round(rng.uniform(*config.direct_to_reverberant_db), 1),
        telephone=telephone,
        mu_law=telephone and _chance(rng, 0.5),
        noise_snr_db=round(rng.uniform(*config.snr_db), 1) if noise else None,
        noise_color=rng.choice(effects.NOISE_COLORS),
        lead_pad=round(rng.uniform(*config.pad_seconds), 3),
        tail_pad=round(rng.uniform(*config.pad_seconds), 3),
        seed=rng.randrange(2**31),
    )


def choose_voice(
    voices: Sequence[Voice], engine_weights: dict[str, float], rng: random.Random
) -> Voice:
    """Picks an engine by weight, then a speaker, then one of that speaker's voices.

    Drawing the speaker before the voice keeps espeak-ng's many accents from
    crowding out the speakers with one voice.

    Args:
        voices: Candidate voices (one split's).
        engine_weights: Relative weight per engine; engines absent from `voices`
            drop out.
        rng: Random generator.

    Returns:
        The chosen voice.
    """
    engines = sorted({v.engine for v in voices})
    weights = [engine_weights.get(engine, 0.0) for engine in engines]
    if sum(weights) <= 0:
        weights = [1.0] * len(engines)
    engine = rng.choices(engines, weights=weights)[0]
    speakers = sorted({v.speaker for v in voices if v.engine == engine})
    speaker = rng.choice(speakers)
    return rng.choice([v for v in voices if v.engine == engine and v.speaker == speaker])


def plan_jobs(
    voices: Sequence[Voice],
    num_sentences: int,
    seed: int,
    utterances_per_sentence: int = 1,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    engine_weights: dict[str, float] | None = None,
    variety: VarietyConfig | None = None,
    max_words: int | None = None,
    balance_words: bool = True,
) -> list[UtteranceJob]:
    """Plans every utterance of the corpus: sentence, split, voice and rendering.

    Args:
        voices: Usable voices; each split uses those of its speakers.
        num_sentences: Distinct sentences drawn from the grammar.
        seed: Seed of every random choice.
        utterances_per_sentence: Voices that speak each sentence.
        dev_fraction: Share of sentences for dev.
        test_fraction: Share of sentences for test.
        engine_weights: Relative share of each engine; default
            `DEFAULT_ENGINE_WEIGHTS`.
        variety: Ranges of the rendering choices; default `VarietyConfig()`.
        max_words: Longest sentence in words (None: the grammar's own lengths).
        balance_words: Pick sentences so every word is heard often (see
            `grammar.generate_sentences`).

    Returns:
        The jobs, ids in order.

    Raises:
        ValueError: If a split with sentences has no voice of its speakers.
    """
    variety = variety or VarietyConfig()
    engine_weights = engine_weights or DEFAULT_ENGINE_WEIGHTS
    sentences = generate_sentences(num_sentences, seed, max_words, balance_words)
    by_split = split_sentences(sentences, seed, dev_fraction, test_fraction)
    rng = random.Random(seed + 1)
    jobs = []
    for split in SPLITS:
        split_voices = [v for v in voices if speaker_split(v.speaker) == split]
        if by_split[split] and not split_voices:
            raise ValueError(
                f"No voice for the {split} split: its speakers are held out, so install "
                f"or select more voices. Received: voices={[v.key for v in voices]}"
            )
        fraction = variety.augment_fraction.get(split, 0.0)
        for sentence in by_split[split]:
            for _ in range(utterances_per_sentence):
                voice = choose_voice(split_voices, engine_weights, rng)
                rendering = draw_rendering(voice, _chance(rng, fraction), variety, rng)
                utterance_id = f"{split}-{len(jobs):06d}"
                audio_path = f"audio/{split}/{utterance_id}.flac"
                jobs.append(
                    UtteranceJob(utterance_id, split, sentence.text, voice, rendering, audio_path)
                )
    return jobs


def _sox_to_16k(wav_path: str, rendering: Rendering) -> np.ndarray:
    """Resamples to 16 kHz mono float32 with sox, applying its tempo and pitch effects."""
    command = ["sox", "-q", "-D", wav_path, "-t", "raw", "-e", "floating-point", "-b", "32"]
    command += ["-L", "-c", "1", "-r", str(SAMPLE_RATE), "-", "channels", "1"]
    if rendering.tempo != 1.0:
        command += ["tempo", "-s", f"{rendering.tempo:.3f}"]
    if rendering.pitch_shift_cents != 0.0:
        command += ["pitch", f"{rendering.pitch_shift_cents:.0f}"]
    command += ["rate", "-v", str(SAMPLE_RATE)]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sox failed on {wav_path}: {result.stderr.decode(errors='replace')}")
    return np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)


def render_audio(raw: np.ndarray, rendering: Rendering) -> np.ndarray:
    """Applies trimming, formant warp, augmentation, level and padding to 16 kHz audio.

    Args:
        raw: The engine's speech at 16 kHz (after sox), float32.
        rendering: The choices for this utterance.

    Returns:
        The final waveform, float32 within [-1, 1].
    """
    rng = np.random.default_rng(rendering.seed)
    audio = effects.trim_silence(raw)
    if audio.size == 0:
        return audio
    audio = effects.warp_formants(audio, rendering.formant_warp)
    if rendering.reverb_rt60 is not None:
        rir = effects.synthetic_room_impulse_response(
            rendering.reverb_rt60, rendering.reverb_drr_db, rng
        )
        audio = effects.trim_silence(effects.add_reverb(audio, rir), threshold_db=50.0)
    if rendering.telephone:
        audio = effects.telephone_band(audio, rendering.mu_law)
    audio = effects.set_level(audio, rendering.level_dbfs)
    audio = effects.pad(audio, rendering.lead_pad, rendering.tail_pad)
    if rendering.noise_snr_db is not None:
        audio = effects.add_noise(audio, rendering.noise_snr_db, rendering.noise_color, rng)
    return np.clip(audio, -1.0, 32767.0 / 32768.0)


def render_jobs(jobs: Sequence[UtteranceJob], out_dir: str) -> list[dict[str, Any]]:
    """Synthesizes and writes a batch of utterances (the unit of parallel work).

    Args:
        jobs: The utterances.
        out_dir: Corpus folder; audio goes to `out_dir/<job.audio_path>`.

    Returns:
        One result per job: {"id", "duration"} on success, {"id", "error"} otherwise.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="stenograph-tts-") as work_dir:
        requests = [
            SynthesisRequest(job.voice, job.text, job.rendering.prosody, f"{work_dir}/{i}.wav")
            for i, job in enumerate(jobs)
        ]
        synthesize(requests, work_dir)
        for job, request in zip(jobs, requests, strict=True):
            results.append(_finish(job, request.wav_path, out_dir))
    return results


def _finish(job: UtteranceJob, wav_path: str, out_dir: str) -> dict[str, Any]:
    """Post-processes one synthesized file into its FLAC; reports instead of raising."""
    if not Path(wav_path).is_file():
        return {"id": job.utterance_id, "error": f"{job.voice.key} produced no audio"}
    try:
        audio = render_audio(_sox_to_16k(wav_path, job.rendering), job.rendering)
    except (RuntimeError, ValueError) as error:
        return {"id": job.utterance_id, "error": str(error)}
    if len(audio) < MIN_DURATION_SECONDS * SAMPLE_RATE:
        return {"id": job.utterance_id, "error": f"{job.voice.key} produced only silence"}
    target = Path(out_dir) / job.audio_path
    target.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(
        target, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0
    )
    return {"id": job.utterance_id, "duration": round(len(audio) / SAMPLE_RATE, 4)}


def _render_chunk(args: tuple[list[UtteranceJob], str]) -> list[dict[str, Any]]:
    return render_jobs(*args)


def engine_versions() -> dict[str, str]:
    """The version line of each installed engine and sox (for the corpus record)."""
    commands = {
        "espeak-ng": ["espeak-ng", "--version"],
        "festival": ["festival", "--version"],
        "flite": ["flite", "--version"],
        "sox": ["sox", "--version"],
    }
    versions = {}
    for name, command in commands.items():
        if shutil.which(command[0]) is None:
            continue
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line.strip() for line in (output.stdout + output.stderr).splitlines()]
        # flite prints a copyright line before its "version: flite-2.2 ..." line.
        versioned = [line for line in lines if re.search(r"\d+\.\d+", line)]
        # espeak-ng appends its data folder, which says nothing about the version.
        versions[name] = re.sub(r"\s+Data at:.*", "", (versioned or lines or [""])[0])
    return versions


def _existing_manifests(out_dir: Path) -> list[Path]:
    return [out_dir / f"{split}.jsonl" for split in SPLITS if (out_dir / f"{split}.jsonl").exists()]


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if _existing_manifests(out_dir) and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a corpus; pass overwrite=True (--overwrite) to "
            f"replace it. Received: out_dir={str(out_dir)!r}"
        )


def _clear_out_dir(out_dir: Path) -> None:
    """Removes a previous corpus's audio and manifests (nothing else) from `out_dir`."""
    if (out_dir / "audio").is_dir():
        shutil.rmtree(out_dir / "audio")
    for path in _existing_manifests(out_dir):
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _run_jobs(
    jobs: list[UtteranceJob], out_dir: str, workers: int, chunk_size: int, progress: bool
) -> list[dict[str, Any]]:
    chunks = [(jobs[i : i + chunk_size], out_dir) for i in range(0, len(jobs), chunk_size)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="utt", desc="synthesizing", file=sys.stderr)
    results: list[dict[str, Any]] = []
    if workers <= 1:
        outputs = map(_render_chunk, chunks)
        for output in outputs:
            results.extend(output)
            if bar is not None:
                bar.update(len(output))
    else:
        # spawn: the caller may have TensorFlow loaded, which does not survive fork.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for output in pool.imap(_render_chunk, chunks):
                results.extend(output)
                if bar is not None:
                    bar.update(len(output))
    if bar is not None:
        bar.close()
    return results


def _split_statistics(records: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(r["duration"] for r in records)
    return {
        "utterances": len(records),
        "hours": round(seconds / 3600.0, 4),
        "mean_seconds": round(seconds / max(1, len(records)), 3),
        "sentences": len({r["text"] for r in records}),
        "speakers": sorted({r["speaker"] for r in records}),
    }


def generate_corpus(
    out_dir: str | Path,
    num_sentences: int,
    voices: Sequence[str] | None = None,
    seed: int = 0,
    utterances_per_sentence: int = 1,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    engine_weights: dict[str, float] | None = None,
    variety: VarietyConfig | None = None,
    max_words: int | None = None,
    balance_words: bool = True,
    workers: int = 2,
    chunk_size: int = 16,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generates the spoken-commands corpus into `out_dir`.

    Args:
        out_dir: Destination folder (created).
        num_sentences: Distinct grammar sentences (train/dev/test partition them).
        voices: Voice selectors (engines, speakers or keys, see
            `voices.select_voices`); None uses every installed voice.
        seed: Seed of all random choices; same arguments, same corpus.
        utterances_per_sentence: Voices that speak each sentence.
        dev_fraction: Share of sentences for dev.
        test_fraction: Share of sentences for test.
        engine_weights: Relative share of each engine.
        variety: Ranges of rate, pitch, formant warp, level and augmentation.
        max_words: Longest sentence in words (None: the grammar's own lengths).
        balance_words: Pick sentences so every word is heard often; False keeps
            the grammar's own word frequencies.
        workers: Parallel processes.
        chunk_size: Utterances per unit of parallel work.
        overwrite: Replace a corpus already in `out_dir`.
        progress: Show a progress bar on stderr.

    Returns:
        The summary also saved as `corpus.json`: settings, engine versions,
        per-split statistics, and failures (utterances skipped with the reason).

    Raises:
        RuntimeError: If no engine is installed (names the packages to install)
            or every utterance failed.
        FileExistsError: If `out_dir` holds a corpus and `overwrite` is False.
    """
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    usable = select_voices(voices)
    variety = variety or VarietyConfig()
    jobs = plan_jobs(
        usable,
        num_sentences,
        seed,
        utterances_per_sentence,
        dev_fraction,
        test_fraction,
        engine_weights,
        variety,
        max_words,
        balance_words,
    )
    _clear_out_dir(out_dir)
    results = _run_jobs(jobs, str(out_dir), workers, chunk_size, progress)
    durations = {r["id"]: r["duration"] for r in results if "duration" in r}
    failures = [r for r in results if "error" in r]
    for failure in failures:
        logger.warning("skipped %s: %s", failure["id"], failure["error"])
    if not durations:
        raise RuntimeError(f"Every utterance failed; first error: {failures[0]['error']}")
    summary = _write_outputs(out_dir, jobs, durations)
    summary["failures"] = failures
    summary["settings"] = {
        "num_sentences": num_sentences,
        "voices": list(voices) if voices is not None else None,
        "seed": seed,
        "utterances_per_sentence": utterances_per_sentence,
        "dev_fraction": dev_fraction,
        "test_fraction": test_fraction,
        "engine_weights": engine_weights or DEFAULT_ENGINE_WEIGHTS,
        "variety": asdict(variety),
        "max_words": max_words,
        "balance_words": balance_words,
    }
    summary["engine_versions"] = engine_versions()
    summary["voices_used"] = sorted({job.voice.key for job in jobs})
    (out_dir / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def job_utterance(job: UtteranceJob, out_dir: Path, duration: float) -> Utterance:
    """The manifest entry of a synthesized job (absolute audio path under `out_dir`)."""
    return Utterance(
        id=job.utterance_id,
        audio_path=str((out_dir / job.audio_path).absolute()),
        text=job.text,
        duration=duration,
        offset=0.0,
        speaker=job.voice.speaker,
    )


def _write_outputs(
    out_dir: Path, jobs: list[UtteranceJob], durations: dict[str, float]
) -> dict[str, Any]:
    """Writes the manifests and renderings.jsonl; returns per-split statistics."""
    statistics: dict[str, Any] = {}
    rendering_lines = []
    for split in SPLITS:
        utterances = [
            job_utterance(job, out_dir, durations[job.utterance_id])
            for job in jobs
            if job.split == split and job.utterance_id in durations
        ]
        # write_manifest stores the paths relative to the manifest's folder.
        write_manifest(out_dir / f"{split}.jsonl", utterances)
        records = [u.to_dict() for u in utterances]
        statistics[split] = _split_statistics(records)
    for job in jobs:
        if job.utterance_id in durations:
            record = {"id": job.utterance_id, "voice": job.voice.key, **asdict(job.rendering)}
            rendering_lines.append(json.dumps(record, separators=(",", ":")) + "\n")
    (out_dir / "renderings.jsonl").write_text("".join(rendering_lines))
    return {"splits": statistics}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the generator's options to a parser (shared by the module and `stenograph`)."""
    parser.add_argument("--out", required=True, help="destination folder")
    parser.add_argument("--num-sentences", type=int, default=2000)
    parser.add_argument(
        "--voices",
        nargs="+",
        default=None,
        help="engines, speakers or voice keys (default: every installed voice)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--utterances-per-sentence", type=int, default=1)
    parser.add_argument(
        "--max-words", type=int, default=None, help="longest sentence in words (default: any)"
    )
    parser.add_argument(
        "--balance-words",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pick sentences so every word is heard often (default: on)",
    )
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument(
        "--augment-fraction",
        type=float,
        nargs=3,
        metavar=("TRAIN", "DEV", "TEST"),
        default=None,
        help="share of utterances with reverb/telephone/noise per split (default 0.35 0.2 0.2)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of `python -m stenograph.recipes.spoken_commands.generate`."""
    parser = argparse.ArgumentParser(
        prog="python -m stenograph.recipes.spoken_commands.generate",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    return parser


def register(subparsers: Any, name: str = "generate-commands") -> argparse.ArgumentParser:
    """Adds the generator as a `stenograph` subcommand (handler: `run`).

    Args:
        subparsers: The object returned by `ArgumentParser.add_subparsers()`.
        name: The subcommand's name.

    Returns:
        The subcommand's parser.
    """
    parser = subparsers.add_parser(name, help=DESCRIPTION, description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generates a corpus from parsed arguments; prints the per-split statistics.

    Returns:
        0 on success, 1 on an error the user can fix (printed on stderr).
    """
    variety = VarietyConfig()
    if args.augment_fraction is not None:
        fractions = dict(zip(SPLITS, args.augment_fraction, strict=True))
        variety = VarietyConfig(augment_fraction=fractions)
    try:
        summary = generate_corpus(
            args.out,
            args.num_sentences,
            voices=args.voices,
            seed=args.seed,
            utterances_per_sentence=args.utterances_per_sentence,
            dev_fraction=args.dev_fraction,
            test_fraction=args.test_fraction,
            variety=variety,
            max_words=args.max_words,
            balance_words=args.balance_words,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (RuntimeError, ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for split, stats in summary["splits"].items():
        print(
            f"{split}: {stats['utterances']} utterances, {stats['hours'] * 60:.1f} min, "
            f"{stats['sentences']} sentences, {len(stats['speakers'])} speakers"
        )
    if summary["failures"]:
        print(f"skipped {len(summary['failures'])} utterances (see corpus.json)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the generator from the command line (`python -m ...generate`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
