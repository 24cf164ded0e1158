"""The spoken-commands recipe and `stenograph demo`: train, evaluate, LM, export, transcribe.

Usage (exact commands; timings and WER in RESULTS.md):

    stenograph demo                                 # everything below, into ./exp/demo
    stenograph demo --out exp/demo --minutes 9.5 --epochs 30 --extra 3000 \
        --precision auto                            # = the defaults
    stenograph demo --extra 0                       # the shipped corpus alone
    stenograph demo --streaming --out exp/demo-streaming   # the causal (streaming) model
    stenograph demo --generate 5000 --out exp/commands-5k   # a fresh corpus from the TTS engines

It runs, in order (rerunning the command resumes: prepared data and generated audio
are kept, training continues from its newest checkpoint, and only the cheap stages
after it run again):

    1. prepare     the shipped corpus (recipes/spoken_commands/data) or `--generate N` new
                   sentences, plus `--extra N` fresh training utterances made with the
                   installed TTS engines (training speakers only; word-balanced
                   sentences, never a dev or test one, each said by up to
                   `EXTRA_MAX_REPEATS` voices; cached in <out>/generated; skipped
                   with a one-line message when no engine is installed)
                   -> <out>/data/{train,dev,test}.jsonl, vocabulary, config
    2. train       2 strided convolutions + 2xBiLSTM-CTC on log-mels with
                   speed/noise/gain/SpecAugment; making the extra data and training
                   share the `--minutes` budget: training stops when the time is up
                   (inside an epoch if need be), and the learning rate's cosine decay
                   follows the clock to end there (`train.max_minutes`)
                   -> <out>/model (checkpoints, best weights)
    3. lm          a KenLM 4-gram of the training transcripts plus sentences drawn from
                   the grammar (never a dev or test sentence), its weights tuned on dev;
                   words outside its list pay `UNK_SCORE_OFFSET` (a closed vocabulary)
                   -> <out>/model/lm/, <out>/model/decoding.json
    4. evaluate    held-out speakers and sentences (test, and dev): WER and CER with
                   jiwer, greedy vs beam vs beam+LM -> <out>/model/eval/
    5. export      a SavedModel that takes raw audio -> <out>/export
    6. transcribe  a few held-out test files with the exported model, reference and
                   hypothesis side by side

Only the test split is reported as the result; every choice (the recipe's settings,
the LM weights) is made on dev.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stenograph.pipeline.manifest import Utterance, read_manifest

from .. import hardware
from ..config import PRECISIONS, ExperimentConfig, model_preset
from ..prepare import PreparedPaths, Recipe, prepare
from . import SHIPPED_CORPUS_DIR, grammar

_log = logging.getLogger("stenograph.demo")

DEFAULT_OUT = Path("exp/demo")
STREAMING_OUT = Path("exp/demo-streaming")
DEFAULT_EPOCHS = 30
DEFAULT_MINUTES = 9.5
DEFAULT_EXTRA_UTTERANCES = 3000
# How many extra utterances may share one sentence (`enlarge.EnlargeRequest`). Words
# such as "now", "temperature" and "o'clock" live in a handful of six-word sentences,
# all taken by the corpus, so distinct new sentences left them at 5-8 of 3,827
# training utterances, and dev and test errors gathered on them. With repeats, the
# word balancing says those sentences again with other voices: every word is then in
# 25+ utterances with 4 repeats, 37+ with 8. Eight repeats gave the lowest dev WER
# (RESULTS.md, "Session 5: rare words said again by other voices").
EXTRA_MAX_REPEATS = 8
# Chosen for the machine when training starts (`hardware.choose_precision`):
# mixed_bfloat16 on CPUs with AMX and AMD CPUs with AVX-512 BF16, mixed_float16 on GPUs
# with tensor cores, else float32.
DEFAULT_PRECISION = "auto"
# The BiLSTM's step is bound by its recurrence, not the batch: a batch of 16 costs
# little more than half a batch of 32, so the budget buys nearly twice the updates,
# which learned faster per minute (RESULTS.md, "How the settings were chosen").
BATCH_SIZE = 16
LM_ORDER = 4
# The LM also reads this many sentences drawn from the grammar (dev and test
# sentences excluded): text costs nothing where the grammar is known, and the
# training transcripts alone (repeats included) leave most word sequences unseen.
# It lowered dev and test WER (benchmarks/lm_text.py; RESULTS.md, "Session 7: the
# language model also reads the grammar").
LM_GRAMMAR_SENTENCES = 20_000
LM_GRAMMAR_SEED = 1
BEAM_WIDTH = 32
# The commands are a closed vocabulary (every dev and test word is in training), so
# the LM decoder's penalty for a word outside the LM's list is raised from -10 to
# -30: near-miss spellings such as "threro" or "linds" lose to known words, which
# lowered dev and test WER (RESULTS.md, "Session 8: known words only").
UNK_SCORE_OFFSET = -30.0
TRANSCRIBE_EXAMPLES = 8
# Alpha/beta grid for LM fusion, searched on dev.
LM_ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
LM_BETAS = (0.0, 1.0, 2.0, 3.0)

# ---------------------------------------------------------------------------
# Config: what the recipe trains.

# Waveform augmentation on every epoch (pauses in the shipped audio are digitally
# silent, so noise and dither keep the model from relying on exact zeros), then
# SpecAugment on the log-mels. Widths suit 80 mel bins and ~1.7 s utterances.
AUGMENTATION: dict[str, Any] = {
    "speed_range": [0.9, 1.1],
    "speed_probability": 0.6,
    "noise_probability": 0.4,
    "snr_range": [10.0, 30.0],
    "noise_kinds": ["white", "pink", "babble"],
    "gain_db_range": [-6.0, 6.0],
    "freq_masks": 2,
    "freq_mask_width": 10,
    "time_masks": 2,
    "time_mask_width": 10,
    "time_mask_ratio": 0.1,
}

# Length buckets for the training batches. A batch is padded to its longest
# utterance and the BiLSTM runs over every padded frame; the pipeline's default
# edges (2, 3, 4, ... 30 s) put nearly all of this corpus (0.5-3.4 s) in one bucket.
BUCKET_SECONDS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)

CONFIG_OVERRIDES: dict[str, Any] = {
    "data.batch_size": BATCH_SIZE,
    # The corpus is 30 minutes: keep decoded audio in memory, augment after the cache.
    "data.dataset": {
        "augment": AUGMENTATION,
        "cache": "memory",
        # Holds the whole corpus, so every batch is drawn from all of it (the extra
        # utterances follow the shipped ones in the manifest); it holds references
        # to the cached audio, not copies.
        "shuffle_buffer_size": 16384,
        "bucket_boundaries": list(BUCKET_SECONDS),
    },
    "features.dither": 1e-4,
    # Two strided 3x3 convolutions over time and frequency instead of stacking 3
    # frames: a 4x shorter sequence for the LSTMs, and filters that slide along
    # frequency, so voices whose formants sit higher or lower share features. 16
    # channels, not 32: cheaper steps let the budget train more epochs, which won on
    # dev and on the human recordings (RESULTS.md, "Session 4").
    "model.reduction": "conv",
    "model.reduction_factor": 4,
    "model.conv_channels": 16,
    "model.dropout": 0.15,
    "train.learning_rate": 3e-3,
    "train.warmup_steps": 100,
    "train.final_learning_rate_ratio": 0.02,
    "train.checkpoint_every": 100,
    "train.keep_checkpoints": 2,
    "train.patience": 0,  # the time budget stops the run; best weights are kept by dev WER
    "train.log_every": 20,
}


def commands_config(
    base: ExperimentConfig, num_train: int, epochs: int, precision: str
) -> ExperimentConfig:
    """The recipe's training config: the prepared config plus the demo's schedule.

    Args:
        base: The prepared config (manifests, vocabulary, model preset and the
            recipe's overrides).
        num_train: Training utterances (sets the cosine decay length).
        epochs: Planned epochs; the learning rate decays over all of them.
        precision: "auto", "float32", "mixed_bfloat16" or "mixed_float16".

    Returns:
        The recipe's config (`train.precision` as given; training resolves "auto").
    """
    steps_per_epoch = math.ceil(num_train / base.data.batch_size)
    warmup = base.train.warmup_steps
    return base.override(
        {
            "train.epochs": epochs,
            "train.decay_steps": max(1, epochs * steps_per_epoch - warmup),
            "train.precision": precision,
        }
    )


def streaming_variant(config: ExperimentConfig) -> ExperimentConfig:
    """`--streaming`: the same recipe with the causal "streaming" model preset.

    Forward LSTMs with a short lookahead after the recipe's strided convolutions,
    normalised with statistics of the training set (computed when training starts,
    stored in the model), so the export gets the `stream_*` signatures; the recipe's
    convolution channels and dropout are kept. Evaluated offline, a causal model gives
    exactly what its stream gives.
    """
    model = model_preset(
        "streaming",
        conv_channels=config.model.conv_channels,
        dropout=config.model.dropout,
        use_cudnn=config.model.use_cudnn,
    )
    return dataclasses.replace(config, model=model)


# ---------------------------------------------------------------------------
# Stage 1: prepare.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--corpus`: a generated corpus folder (default: the shipped copy)."""
    parser.add_argument(
        "--corpus",
        type=Path,
        default=SHIPPED_CORPUS_DIR,
        help="folder with train/dev/test.jsonl from the generator (default: the shipped copy)",
    )


def import_splits(args: argparse.Namespace) -> dict[str, list[Utterance]]:
    """Reads the generator's three manifests (audio paths resolve against the folder).

    `args.extra_train` (optional) lists manifests of extra training utterances
    (`enlarge.py`), appended to the corpus's train split.
    """
    corpus = Path(args.corpus)
    splits = {}
    for split in ("train", "dev", "test"):
        manifest = corpus / f"{split}.jsonl"
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{manifest} is missing; a commands corpus has train.jsonl, dev.jsonl and "
                f"test.jsonl (make one with `stenograph generate-commands --out {corpus}`)."
            )
        splits[split] = read_manifest(manifest)
    for manifest in getattr(args, "extra_train", None) or ():
        splits["train"] += read_manifest(Path(manifest))
    return splits


RECIPE = Recipe(
    name="commands",
    description="spoken commands made with Debian's TTS engines (shipped, or --generate N)",
    add_arguments=add_arguments,
    import_splits=import_splits,
    train_splits=["train"],
    valid_split="dev",
    test_splits=["test"],
    preset="small",
    config_overrides=CONFIG_OVERRIDES,
)


def generate(out: Path, num_sentences: int, workers: int) -> Path:
    """Makes a new corpus with the installed TTS engines (skipped if already there).

    Raises:
        ValueError: If no engine is installed (the message names the packages).
    """
    from .generate import generate_corpus

    corpus = out / "corpus"
    if (corpus / "corpus.json").is_file():
        _log.info("corpus: %s exists, reusing it", corpus)
        return corpus
    summary = generate_corpus(
        corpus, num_sentences=num_sentences, seed=0, max_words=6, workers=workers
    )
    _log.info("corpus: generated %s", json.dumps(summary.get("statistics", {}))[:300])
    return corpus


def prepare_data(out: Path, corpus: Path, extra_train: Sequence[Path] = ()) -> PreparedPaths:
    """Stage 1: manifests checked, vocabulary and config in `<out>/data` (rerun-safe)."""
    args = argparse.Namespace(corpus=corpus, extra_train=list(extra_train))
    return prepare(RECIPE, args, out / "data")


def enlarge_training_data(
    corpus: Path, cache_dir: Path, num_utterances: int, workers: int
) -> dict[str, Any] | None:
    """Stage 1b: fresh training utterances from the installed TTS engines (cached).

    Returns:
        What `enlarge.enlarge_training_set` returns, or None (with a one-line
        message) when no engine is installed: the corpus alone is used then.
    """
    from .enlarge import EnlargeRequest, engines_unavailable_reason, enlarge_training_set

    reason = engines_unavailable_reason()
    if reason is not None:
        print(f"extra training data: {reason}", flush=True)
        return None
    print(
        f"extra training data: {num_utterances} new utterances by training speakers only, "
        f"cached in {cache_dir}",
        flush=True,
    )
    result = enlarge_training_set(
        cache_dir, corpus, EnlargeRequest(num_utterances, max_repeats=EXTRA_MAX_REPEATS), workers
    )
    verb = "reused" if result["reused"] else "generated"
    print(
        f"extra training data: {verb} {result['utterances']} utterances "
        f"({result['minutes_of_speech']} min of speech, {result['speakers']} speakers) "
        f"in {result['seconds']:.0f} s",
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------
# Stage 2: train within a time budget.


def trained_state(exp_dir: Path) -> Any:
    """The `TrainingState` of the newest checkpoint (a fresh one if there is none)."""
    from ..experiment import TrainingState, latest_checkpoint, read_training_state

    checkpoint = latest_checkpoint(exp_dir)
    return TrainingState() if checkpoint is None else read_training_state(checkpoint)


def training_precision(config: ExperimentConfig, exp_dir: Path) -> hardware.PrecisionChoice:
    """The precision (and why) training will choose for `config` in `exp_dir`.

    Training resolves the precision the same way when it starts (and records it in
    `<exp_dir>/hardware.json`); this says it before, for the demo's output.
    """
    from ..experiment import CONFIG_FILE
    from ..train import resolve_run_precision

    saved_path = exp_dir / CONFIG_FILE
    saved = ExperimentConfig.load(saved_path) if saved_path.is_file() else None
    return resolve_run_precision(config, saved, hardware.read_device_facts())[1]


def train_with_budget(
    config: ExperimentConfig, exp_dir: Path, minutes: float, num_train: int
) -> dict[str, Any]:
    """Stage 2: trains (or resumes) for at most `config.train.epochs` within `minutes`.

    One `train` call with `train.max_minutes`: training stops when this call's
    minutes are used up (inside an epoch if need be), and the learning rate's
    cosine decay follows the clock, so it has decayed by then on a fast machine or
    a slow one, and under changing load. A rerun continues the run with a new
    budget (the learning rate rises again and decays over it).

    Args:
        config: The training config (`train.epochs` is the most to train, and a
            nonzero `train.max_steps` the most steps).
        exp_dir: The experiment folder (resumed if it holds a checkpoint).
        minutes: The time budget of this call.
        num_train: Training utterances (to count epochs).

    Returns:
        What happened: steps and epochs trained, planned epochs, seconds, and
        whether the budget cut it.
    """
    from ..train import train

    started = time.monotonic()
    planned = config.train.epochs
    before = trained_state(exp_dir)
    total_minutes = before.seconds / 60 + minutes
    print(
        f"train: at most {planned} epochs within {minutes:.1f} min; the learning rate decays "
        "with the clock, to its lowest when the time is up",
        flush=True,
    )
    state = train(config.override({"train.max_minutes": round(total_minutes, 3)}), exp_dir)
    per_epoch = math.ceil(num_train / config.data.batch_size)
    epochs = state.epoch + min(1.0, state.batch_in_epoch / per_epoch)
    cut = state.stop_reason.startswith("reached train.max_minutes")
    if cut:
        print(
            f"train: {state.step} steps ({epochs:.1f} epochs) fit the {minutes:.1f}-minute "
            f"budget (at most {planned} epochs); rerun the same command to train further, "
            "or raise --minutes",
            flush=True,
        )
    return {
        "steps": state.step,
        "epochs": round(epochs, 2),
        "planned_epochs": planned,
        "seconds": round(time.monotonic() - started, 1),
        "cut_by_budget": cut,
    }


# ---------------------------------------------------------------------------
# Stage 3: the language model.


def lm_unavailable_reason() -> str | None:
    """None when KenLM's programs are ready, else what to install or run."""
    from ..lm import find_kenlm_tools, missing_build_prerequisites

    if find_kenlm_tools() is not None:
        return None
    missing = missing_build_prerequisites()
    steps = (
        f"apt-get install -y {' '.join(sorted(set(missing)))}, then " if missing else ""
    ) + "stenograph lm install-tools"
    return (
        "KenLM's lmplz/build_binary are not built, so LM decoding is skipped. To add it: "
        f"{steps} (about a minute), then rerun this command: training is not repeated."
    )


def lm_grammar_text(exclude: Iterable[str], num_sentences: int = LM_GRAMMAR_SENTENCES) -> list[str]:
    """Sentences drawn from the grammar for the LM, none of them held out.

    Args:
        exclude: Sentences the LM must never read (the dev and test sentences).
        num_sentences: How many distinct sentences to draw (0: none).

    Returns:
        The sentences, the same for the same arguments.
    """
    if num_sentences <= 0:
        return []
    drawn = grammar.generate_sentences(num_sentences, seed=LM_GRAMMAR_SEED, exclude=exclude)
    return [sentence.text for sentence in drawn]


def build_and_tune_lm(
    exp_dir: Path,
    dev_manifest: Path,
    alphas: Sequence[float] = LM_ALPHAS,
    betas: Sequence[float] = LM_BETAS,
    extra_text: Sequence[str] = (),
) -> dict[str, Any]:
    """Stage 3: a word n-gram of the training transcripts, alpha/beta tuned on dev.

    Args:
        exp_dir: The trained experiment (its training transcripts make the LM).
        dev_manifest: Where the LM weights are chosen (never the test split).
        alphas: LM weights to try.
        betas: Word insertion bonuses to try.
        extra_text: More sentences for the LM (`lm_grammar_text`); the caller keeps
            held-out sentences out of it.

    Returns:
        `{"lm_path", "alpha", "beta", "dev_wer", "greedy_dev_wer"}`.
    """
    from ..decoding import make_decoder
    from ..lm import (
        build_lm,
        experiment_log_probs,
        experiment_transcripts,
        tune_lm_weights,
        weight_grid,
        write_decoding_choice,
    )

    sentences, normalize = experiment_transcripts(exp_dir)
    files = build_lm([*sentences, *extra_text], exp_dir / "lm", order=LM_ORDER, normalize=normalize)
    _log.info(
        "lm: %d-gram of %d training sentences and %d from the grammar (%d words) -> %s",
        files.order,
        len(sentences),
        len(extra_text),
        files.num_words,
        files.binary,
    )
    vocabulary, log_probs, references = experiment_log_probs(exp_dir, dev_manifest)

    def factory(alpha: float, beta: float) -> Any:
        return make_decoder(
            "lm",
            vocabulary,
            BEAM_WIDTH,
            files.binary,
            alpha,
            beta,
            unk_score_offset=UNK_SCORE_OFFSET,
        )

    result = tune_lm_weights(log_probs, references, factory, weight_grid(alphas, betas))
    best = result.best
    _log.info("lm: best on dev alpha=%g beta=%g, WER %.2f%%", best.alpha, best.beta, 100 * best.wer)
    choice = {
        "decoder": "lm",
        "lm_path": str(files.binary),
        "alpha": best.alpha,
        "beta": best.beta,
        "beam_width": BEAM_WIDTH,
        "unk_score_offset": UNK_SCORE_OFFSET,
        "dev_manifest": str(dev_manifest),
        "dev_wer": best.wer,
        "trials": [dataclasses.asdict(trial) for trial in result.trials],
    }
    write_decoding_choice(exp_dir, choice)
    return choice


# ---------------------------------------------------------------------------
# Stage 4: evaluate.


def evaluate_decoders(
    exp_dir: Path, manifest: Path, lm_choice: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Stage 4: WER/CER (jiwer) of greedy, beam and (if built) LM decoding on a manifest.

    Returns:
        Decoder name -> `{"wer", "cer", "words", "word_errors", "utterances", "report"}`.
    """
    from ..evaluate import evaluate

    runs: list[tuple[str, dict[str, Any]]] = [
        ("greedy", {"decoder": "greedy"}),
        ("beam", {"decoder": "beam", "beam_width": BEAM_WIDTH}),
    ]
    if lm_choice is not None:
        runs.append(
            (
                "lm",
                {
                    "decoder": "lm",
                    "beam_width": BEAM_WIDTH,
                    "lm_path": lm_choice["lm_path"],
                    "alpha": lm_choice["alpha"],
                    "beta": lm_choice["beta"],
                    "unk_score_offset": lm_choice["unk_score_offset"],
                },
            )
        )
    results = {}
    for name, options in runs:
        summary = evaluate(exp_dir, manifest, **options)
        results[name] = {
            "wer": summary.wer,
            "cer": summary.cer,
            "words": summary.words,
            "word_errors": summary.word_errors,
            "utterances": summary.utterances,
            "skipped": summary.skipped,
            "report": summary.report,
        }
    return results


def format_scores(split: str, results: dict[str, dict[str, Any]]) -> str:
    """A small table: one row per decoder with WER and CER in percent."""
    lines = [f"{split}: {'decoder':<8} {'WER':>7} {'CER':>7}  (word errors / words)"]
    for name, score in results.items():
        lines.append(
            f"{'':{len(split) + 2}}{name:<8} {100 * score['wer']:6.2f}% {100 * score['cer']:6.2f}%"
            f"  ({score['word_errors']}/{score['words']}, {score['utterances']} utterances)"
        )
    return "\n".join(lines)


def speaker_error_rates(manifest: Path, report: str | Path) -> dict[str, tuple[int, int]]:
    """Word errors and words per speaker, from an evaluation report and its manifest.

    Args:
        manifest: The evaluated manifest (it names each utterance's speaker).
        report: The JSON-lines report of `stenograph evaluate`.

    Returns:
        Speaker -> (word errors, words), speakers sorted by name.
    """
    speakers = {u.id: u.speaker or "?" for u in read_manifest(manifest, allow_outside_root=True)}
    totals: dict[str, list[int]] = {}
    for line in Path(report).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            counts = totals.setdefault(speakers.get(row["id"], "?"), [0, 0])
            counts[0] += int(row["word_errors"])
            counts[1] += int(row["words"])
    return {speaker: (errors, words) for speaker, (errors, words) in sorted(totals.items())}


def format_speaker_rates(decoder: str, rates: dict[str, tuple[int, int]]) -> str:
    """One line: WER per speaker, e.g. `awb 23.2% (38/164)`."""
    parts = [f"{s} {100 * e / max(1, w):.1f}% ({e}/{w})" for s, (e, w) in rates.items()]
    return f"  by speaker ({decoder}): " + ", ".join(parts)


# ---------------------------------------------------------------------------
# Stages 5 and 6: export, then transcribe held-out files with the export.


def is_signature_rename_notice(record: logging.LogRecord) -> bool:
    """Whether a log record is TensorFlow's notice that a SavedModel input gets renamed.

    TensorFlow names the captured variables of a signature after their Keras
    paths and then says it replaces the characters SavedModel does not accept;
    the signatures' own argument names are unaffected, so it is not for the user.
    """
    message = record.getMessage()
    return message.startswith("Function `") and "which will be renamed to" in message


def export_model(exp_dir: Path, export_dir: Path) -> dict[str, Any]:
    """Stage 5: the SavedModel (raw audio in, text and log-probabilities out)."""
    from ..export import export_experiment

    absl_logger = logging.getLogger("absl")  # TensorFlow's saved_model logs through absl

    def keep(record: logging.LogRecord) -> bool:
        return not is_signature_rename_notice(record)

    absl_logger.addFilter(keep)
    try:
        result = export_experiment(exp_dir, export_dir, overwrite=True)
    finally:
        absl_logger.removeFilter(keep)
    return {"saved_model": str(result.saved_model), "seconds": round(result.seconds, 1)}


def pick_examples(utterances: Sequence[Utterance], count: int) -> list[Utterance]:
    """`count` utterances spread evenly over a split, a different speaker each if possible."""
    if count <= 0 or not utterances:
        return []
    step = max(1, len(utterances) // count)
    ordered = list(utterances[::step]) + [u for u in utterances if u not in utterances[::step]]
    chosen: list[Utterance] = []
    speakers: set[str | None] = set()
    for utterance in ordered:  # first, one per speaker
        if len(chosen) < count and utterance.speaker not in speakers:
            chosen.append(utterance)
            speakers.add(utterance.speaker)
    for utterance in ordered:  # then fill up with the rest
        if len(chosen) < count and utterance not in chosen:
            chosen.append(utterance)
    return chosen


def transcribe_examples(
    export_dir: Path, examples: Sequence[Utterance], lm_choice: dict[str, Any] | None
) -> list[dict[str, str]]:
    """Stage 6: transcribes files with the exported SavedModel (LM decoding when built).

    Returns:
        One `{"file", "speaker", "reference", "hypothesis"}` per example, in order.
    """
    from ..decoding import make_decoder
    from ..export import load_exported_model
    from ..transcribe import AudioSource, transcribe_sources

    model = load_exported_model(export_dir)
    if lm_choice is None:
        decoder = make_decoder("greedy", model.vocabulary)
    else:
        decoder = make_decoder(
            "lm",
            model.vocabulary,
            BEAM_WIDTH,
            lm_choice["lm_path"],
            lm_choice["alpha"],
            lm_choice["beta"],
            unk_score_offset=lm_choice["unk_score_offset"],
        )
    sources = [AudioSource(u.audio_path, u.id, reference=u.text) for u in examples]
    hypotheses: dict[int, str] = {}
    failures: dict[int, str] = {}
    transcribe_sources(
        sources,
        model,
        decoder,
        on_transcript=lambda index, transcript: hypotheses.__setitem__(index, transcript.text),
        on_failure=lambda index, failure: failures.__setitem__(index, failure.message),
        progress=True,
    )
    return [
        {
            "file": Path(u.audio_path).name,
            "speaker": u.speaker or "",
            "reference": model.vocabulary.normalize(u.text),
            "hypothesis": hypotheses.get(i, f"<failed: {failures.get(i, 'no output')}>"),
        }
        for i, u in enumerate(examples)
    ]


def format_side_by_side(rows: Sequence[dict[str, str]]) -> str:
    """Reference and hypothesis in two columns; `*` marks a difference."""
    width = max([len("reference")] + [len(r["reference"]) for r in rows])
    lines = [f"  {'file':<16} {'reference':<{width}}   hypothesis"]
    for row in rows:
        mark = " " if row["reference"] == row["hypothesis"] else "*"
        lines.append(f"{mark} {row['file']:<16} {row['reference']:<{width}}   {row['hypothesis']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The whole demo.


def run_demo(
    out: Path,
    *,
    epochs: int = DEFAULT_EPOCHS,
    minutes: float = DEFAULT_MINUTES,
    precision: str = DEFAULT_PRECISION,
    generate_sentences: int = 0,
    extra_utterances: int = DEFAULT_EXTRA_UTTERANCES,
    generated_dir: Path | None = None,
    workers: int = 2,
    max_steps: int = 0,
    examples: int = TRANSCRIBE_EXAMPLES,
    lm_weights: tuple[Sequence[float], Sequence[float]] = (LM_ALPHAS, LM_BETAS),
    streaming: bool = False,
) -> dict[str, Any]:
    """Runs every stage (see the module docstring) and writes `<out>/demo_summary.json`.

    Args:
        out: Output folder (data/, model/, export/).
        epochs: Planned training epochs (the learning-rate schedule spans them).
        minutes: Time budget of making the extra data and training; later stages
            are not counted in it.
        precision: Training precision; "auto" chooses for the machine (the summary
            records the policy used and why).
        generate_sentences: If > 0, generate a corpus of this many sentences with
            the installed TTS engines instead of using the shipped copy.
        extra_utterances: Fresh training utterances to generate with the installed
            TTS engines (training speakers, new sentences; cached in `generated_dir`);
            0, or no engine installed, trains on the corpus alone.
        generated_dir: Cache of the extra utterances (default `<out>/generated`).
        workers: Processes for corpus generation.
        max_steps: Stop training after this many steps in total (0 = no limit;
            for smoke tests).
        examples: Held-out files to transcribe.
        lm_weights: The (alphas, betas) grid searched on dev.
        streaming: Train the causal variant (`streaming_variant`); its export has
            the stream signatures.

    Returns:
        The summary: timings, training, LM choice, scores and transcripts.
    """
    started = time.monotonic()
    # Evaluating several decoders retraces tf.functions on new batch shapes by design;
    # TensorFlow's advice about it is noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"out": str(out)}

    def stage(name: str, number: int) -> None:
        print(f"\n== [{number}/6] {name} ({_elapsed(started)}) ==", flush=True)

    stage("prepare", 1)
    corpus = SHIPPED_CORPUS_DIR
    if generate_sentences:
        corpus = generate(out, generate_sentences, workers)
    extra_manifests = []
    if extra_utterances > 0:
        cache = generated_dir or out / "generated"
        summary["extra"] = enlarge_training_data(corpus, cache, extra_utterances, workers)
        if summary["extra"] is not None:
            extra_manifests.append(Path(summary["extra"]["manifest"]))
    paths = prepare_data(out, corpus, extra_manifests)
    train_utterances = read_manifest(paths.train_manifest, allow_outside_root=True)
    print(f"training utterances: {len(train_utterances)}", flush=True)
    timings["prepare"] = time.monotonic() - started

    stage("train", 2)
    exp_dir = out / "model"
    config = commands_config(
        ExperimentConfig.load(paths.config), len(train_utterances), epochs, precision
    )
    if max_steps:
        config = config.override({"train.max_steps": max_steps})
    if streaming:
        config = streaming_variant(config)
    summary["model"] = {"direction": config.model.direction, "streaming": streaming}
    choice = training_precision(config, exp_dir)
    print(f"train: precision {choice.policy} ({choice.reason})", flush=True)
    summary["precision"], summary["precision_reason"] = choice.policy, choice.reason
    mark = time.monotonic()
    # The budget covers making the extra data too, so a slow machine trains less
    # rather than running long (but never less than half the budget).
    train_minutes = max(minutes / 2, minutes - timings["prepare"] / 60)
    summary["train"] = train_with_budget(config, exp_dir, train_minutes, len(train_utterances))
    timings["train"] = time.monotonic() - mark

    stage("language model", 3)
    mark = time.monotonic()
    reason = lm_unavailable_reason()
    lm_choice = None
    if reason is None:
        from .enlarge import corpus_sentences

        # The same held-out sentences the extra training data keeps out.
        held_out = corpus_sentences(corpus, ("dev", "test"))
        lm_choice = build_and_tune_lm(
            exp_dir, paths.manifest("dev"), *lm_weights, extra_text=lm_grammar_text(held_out)
        )
    else:
        print(reason)
    summary["lm"] = lm_choice or {"skipped": reason}
    timings["lm"] = time.monotonic() - mark

    stage("evaluate on held-out speakers and sentences", 4)
    mark = time.monotonic()
    summary["scores"] = {}
    for split in ("test", "dev"):
        scores = evaluate_decoders(exp_dir, paths.manifest(split), lm_choice)
        summary["scores"][split] = scores
        print(format_scores(split, scores), flush=True)
        best = "lm" if "lm" in scores else "beam"
        rates = speaker_error_rates(paths.manifest(split), scores[best]["report"])
        summary.setdefault("by_speaker", {})[split] = {best: rates}
        print(format_speaker_rates(best, rates), flush=True)
    timings["evaluate"] = time.monotonic() - mark

    stage("export", 5)
    mark = time.monotonic()
    summary["export"] = export_model(exp_dir, out / "export")
    print(f"SavedModel: {summary['export']['saved_model']}")
    if streaming:
        from ..export import is_streaming_export

        summary["export"]["stream_signatures"] = is_streaming_export(out / "export")
        print("  with stream_init / stream_step / stream_finish (README.md, Streaming)")
    timings["export"] = time.monotonic() - mark

    stage("transcribe held-out test files with the exported model", 6)
    mark = time.monotonic()
    test = read_manifest(paths.manifest("test"), allow_outside_root=True)
    rows = transcribe_examples(out / "export", pick_examples(test, examples), lm_choice)
    print(format_side_by_side(rows))
    summary["transcripts"] = rows
    timings["transcribe"] = time.monotonic() - mark

    timings["total"] = time.monotonic() - started
    summary["seconds"] = {name: round(value, 1) for name, value in timings.items()}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\ndemo finished in {_elapsed(started)}; summary: {out / 'demo_summary.json'}")
    return summary


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60}:{seconds % 60:02d} elapsed"


# ---------------------------------------------------------------------------
# Command line.


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `stenograph demo` options."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default {DEFAULT_OUT}, with --streaming {STREAMING_OUT})",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="train the causal (streaming) model preset; its export streams chunk by chunk",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        help="minutes for making the extra data and training together (the later stages "
        "take about one more minute; rerun to train further)",
    )
    parser.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help="planned training epochs"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="training precision; auto: mixed_bfloat16 on CPUs with AMX and on AMD CPUs "
        "with AVX-512 BF16 (where it trained faster), mixed_float16 on GPUs with tensor "
        "cores, else float32",
    )
    parser.add_argument(
        "--generate",
        type=int,
        default=0,
        metavar="N",
        help="generate N new sentences with the installed TTS engines instead of the shipped "
        "corpus",
    )
    parser.add_argument(
        "--extra",
        type=int,
        default=DEFAULT_EXTRA_UTTERANCES,
        metavar="N",
        help="N fresh training utterances from the installed TTS engines (training speakers, "
        "new sentences; cached; 0 = the corpus alone)",
    )
    parser.add_argument(
        "--generated-dir",
        type=Path,
        default=None,
        help="cache of the extra utterances (default: <out>/generated)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="processes for --generate and --extra"
    )
    parser.add_argument(
        "--max-steps", type=int, default=0, help="stop training after N steps (smoke runs)"
    )
    parser.add_argument(
        "--examples", type=int, default=TRANSCRIBE_EXAMPLES, help="held-out files to transcribe"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `stenograph demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="train, evaluate, export and try a model on the shipped spoken-commands corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_demo_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Runs `stenograph demo`."""
    if args.epochs < 1 or args.minutes <= 0 or args.extra < 0:
        raise ValueError(
            f"--epochs must be >= 1, --minutes > 0 and --extra >= 0. Received: "
            f"epochs={args.epochs}, minutes={args.minutes}, extra={args.extra}"
        )
    run_demo(
        args.out or (STREAMING_OUT if args.streaming else DEFAULT_OUT),
        epochs=args.epochs,
        minutes=args.minutes,
        precision=args.precision,
        generate_sentences=args.generate,
        extra_utterances=args.extra,
        generated_dir=args.generated_dir,
        workers=args.workers,
        max_steps=args.max_steps,
        examples=args.examples,
        streaming=args.streaming,
    )
    return 0


if __name__ == "__main__":
    from ..cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
