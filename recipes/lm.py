"""Word n-gram language models for CTC decoding: KenLM tools, `lm build`, `lm tune`.

    stenograph lm install-tools                     # builds lmplz/build_binary/query once
    stenograph lm build --exp-dir exp/demo          # training transcripts -> exp/demo/lm/
    stenograph lm build --text corpus.txt --output-dir lm/ --order 3
    stenograph lm tune --exp-dir exp/demo --manifest dev.jsonl --lm exp/demo/lm/lm.binary

KenLM's estimation (``lmplz``) and conversion (``build_binary``) programs are not
on PyPI as binaries; they are compiled from the ``kenlm`` source package on PyPI
with cmake and Debian's boost, zlib, bz2 and lzma development packages, then
cached under ``$XDG_CACHE_HOME/stenograph/kenlm-0.3.0/bin`` (default
``~/.cache/...``). `install_kenlm_tools` does that and names the missing Debian
packages when it cannot. Decoding itself needs none of this: the beam search
backend loads the model (see `recipes.decoding`).

`build_lm` writes ``<name>.arpa``, ``<name>.binary`` (KenLM probing format, fast
to load) and ``<name>.unigrams.txt`` (the word list the decoder needs to tell a
partial word from an unknown one). `tune_lm_weights` grid- or random-searches the
fusion weights alpha/beta on a dev set and `stenograph lm tune` writes the best
pair into the experiment's ``decoding.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stenograph.pipeline.text import TextNormalizer

from .decoding import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_UNK_SCORE_OFFSET,
    TUNED_DECODING_FILE,
    Decoder,
    make_decoder,
)

__all__ = [
    "DECODING_FILE",
    "KENLM_VERSION",
    "KenLMTools",
    "KenLMToolsError",
    "LMFiles",
    "TuneResult",
    "TuneTrial",
    "build_lm",
    "default_cache_dir",
    "experiment_log_probs",
    "experiment_transcripts",
    "find_kenlm_tools",
    "install_kenlm_tools",
    "missing_build_prerequisites",
    "normalize_corpus",
    "read_text_files",
    "register",
    "require_kenlm_tools",
    "score_sentences",
    "tune_lm_weights",
    "weight_grid",
    "write_decoding_choice",
]

_log = logging.getLogger("stenograph")

KENLM_VERSION = "0.3.0"
KENLM_MAX_ORDER = 6
PROGRAMS = ("lmplz", "build_binary", "query")
DECODING_FILE = TUNED_DECODING_FILE

# What the build needs -> the Debian package that provides it.
_REQUIRED_COMMANDS = {"cmake": "cmake", "c++": "build-essential", "make": "build-essential"}
_REQUIRED_HEADERS = {
    "boost/program_options.hpp": "libboost-program-options-dev",
    "boost/system/error_code.hpp": "libboost-system-dev",
    "boost/thread.hpp": "libboost-thread-dev",
    "boost/test/unit_test.hpp": "libboost-test-dev",
    "zlib.h": "zlib1g-dev",
    "bzlib.h": "libbz2-dev",
    "lzma.h": "liblzma-dev",
}
_INCLUDE_DIRS = ("/usr/include", "/usr/local/include", "/opt/homebrew/include")


class KenLMToolsError(RuntimeError):
    """KenLM's programs are missing and cannot be built here; the message says why."""


# ---------------------------------------------------------------------------
# KenLM programs: find, check prerequisites, build and cache


@dataclass(frozen=True)
class KenLMTools:
    """Paths of KenLM's command-line programs."""

    lmplz: Path
    build_binary: Path
    query: Path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stenograph/kenlm-<version>`` (``~/.cache`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "stenograph" / f"kenlm-{KENLM_VERSION}"


def _tools_in(folder: Path) -> KenLMTools | None:
    paths = [folder / name for name in PROGRAMS]
    if all(path.is_file() and os.access(path, os.X_OK) for path in paths):
        return KenLMTools(*paths)
    return None


def find_kenlm_tools(cache_dir: str | Path | None = None) -> KenLMTools | None:
    """Finds built KenLM programs: first in the cache, then on ``PATH``.

    Args:
        cache_dir: The cache folder (default `default_cache_dir`).

    Returns:
        The programs, or None if any of them is missing from both places.
    """
    cached = _tools_in(Path(cache_dir or default_cache_dir()) / "bin")
    if cached:
        return cached
    found = [shutil.which(name) for name in PROGRAMS]
    if all(found):
        return KenLMTools(*(Path(path) for path in found))
    return None


def missing_build_prerequisites(
    which: Callable[[str], str | None] = shutil.which,
    include_dirs: Sequence[str] = _INCLUDE_DIRS,
) -> list[str]:
    """Debian packages whose absence stops the KenLM build (empty when all is there).

    Args:
        which: Looks a command up on ``PATH`` (injectable for tests).
        include_dirs: Where C/C++ headers are searched.

    Returns:
        Sorted, de-duplicated Debian package names to ``apt-get install``.
    """
    missing = {package for command, package in _REQUIRED_COMMANDS.items() if not which(command)}
    for header, package in _REQUIRED_HEADERS.items():
        if not any((Path(folder) / header).is_file() for folder in include_dirs):
            missing.add(package)
    return sorted(missing)


def _run(command: Sequence[str], log: Path, cwd: Path | None = None) -> None:
    """Runs a build step, appending its output to ``log``; raises with the log's tail."""
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(map(str, command))}\n")
        handle.flush()
        result = subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
        raise KenLMToolsError(
            f"KenLM build step failed (exit {result.returncode}): {' '.join(map(str, command))}\n"
            f"Last lines of {log}:\n{tail}"
        )


def _download_sdist(folder: Path, log: Path) -> Path:
    """Fetches the ``kenlm`` source package from the package index with pip."""
    _run(
        [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "kenlm",
            "--dest", str(folder), f"kenlm=={KENLM_VERSION}",
        ],
        log,
    )  # fmt: skip
    archives = sorted(folder.glob("kenlm-*.tar.gz"))
    if not archives:
        raise KenLMToolsError(f"pip did not download a kenlm source archive into {folder}")
    return archives[0]


def _extract(archive: Path, folder: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    sources = [path for path in folder.iterdir() if (path / "CMakeLists.txt").is_file()]
    if not sources:
        raise KenLMToolsError(f"{archive} has no CMakeLists.txt: not a KenLM source archive")
    return sources[0]


def install_kenlm_tools(
    cache_dir: str | Path | None = None,
    source: str | Path | None = None,
    jobs: int | None = None,
    force: bool = False,
) -> KenLMTools:
    """Builds ``lmplz``, ``build_binary`` and ``query`` from the kenlm sdist and caches them.

    Returns at once when the cache already holds them (unless ``force``).

    Args:
        cache_dir: Where ``bin/`` goes (default `default_cache_dir`).
        source: A local ``kenlm-*.tar.gz``; downloaded with pip when None.
        jobs: Parallel compile jobs (default: CPU count).
        force: Rebuild even if cached.

    Returns:
        The cached programs.

    Raises:
        KenLMToolsError: Prerequisites are missing (the message gives the
            ``apt-get install`` line) or a build step failed (with its log).
    """
    cache = Path(cache_dir or default_cache_dir())
    cached = _tools_in(cache / "bin")
    if cached and not force:
        return cached
    missing = missing_build_prerequisites()
    if missing:
        raise KenLMToolsError(
            "Cannot build KenLM's lmplz/build_binary: missing build prerequisites. "
            f"Install them as root with: apt-get install -y {' '.join(missing)}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "build.log"
    log.write_text("", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="kenlm-build-") as scratch:
        scratch_dir = Path(scratch)
        archive = Path(source) if source else _download_sdist(scratch_dir, log)
        source_dir = _extract(archive, scratch_dir)
        build_dir = scratch_dir / "build"
        _run(
            ["cmake", "-S", str(source_dir), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
             f"-DKENLM_MAX_ORDER={KENLM_MAX_ORDER}"],
            log,
        )  # fmt: skip
        _run(
            ["cmake", "--build", str(build_dir), "--target", *PROGRAMS,
             "-j", str(jobs or os.cpu_count() or 1)],
            log,
        )  # fmt: skip
        (cache / "bin").mkdir(exist_ok=True)
        for name in PROGRAMS:
            # Copy under a temporary name, then rename: a concurrent reader never
            # sees a half-written program.
            partial = cache / "bin" / f".{name}.partial"
            shutil.copy2(build_dir / "bin" / name, partial)
            partial.replace(cache / "bin" / name)
    tools = _tools_in(cache / "bin")
    if tools is None:  # pragma: no cover - the build said it succeeded
        raise KenLMToolsError(f"KenLM build finished but {cache / 'bin'} lacks {PROGRAMS}")
    return tools


def require_kenlm_tools(cache_dir: str | Path | None = None) -> KenLMTools:
    """The KenLM programs, or a `KenLMToolsError` telling how to get them."""
    tools = find_kenlm_tools(cache_dir)
    if tools is None:
        raise KenLMToolsError(
            "KenLM's lmplz/build_binary/query are not built yet. Run `stenograph lm "
            f"install-tools` (it caches them in {Path(cache_dir or default_cache_dir())})."
        )
    return tools


# ---------------------------------------------------------------------------
# Building a model


@dataclass(frozen=True)
class LMFiles:
    """What `build_lm` wrote."""

    arpa: Path
    binary: Path
    unigrams: Path
    order: int
    num_sentences: int
    num_words: int


def read_text_files(paths: Iterable[str | Path]) -> Iterator[str]:
    """Yields the lines of UTF-8 text files (one sentence per line)."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            yield from handle


def normalize_corpus(
    sentences: Iterable[str], normalize: Callable[[str], str] | None = None
) -> Iterator[str]:
    """Normalises sentences and drops empty ones.

    Args:
        sentences: Raw lines.
        normalize: The vocabulary's text normaliser, so LM words are spelled as the
            acoustic model spells them; default `pipeline.text.TextNormalizer()`.

    Yields:
        Non-empty normalised sentences.
    """
    normalize = normalize or TextNormalizer()
    for sentence in sentences:
        text = " ".join(normalize(sentence).split())
        if text:
            yield text


def _check_order(order: int) -> int:
    if not 2 <= int(order) <= KENLM_MAX_ORDER:
        raise ValueError(
            f"LM order must be between 2 and {KENLM_MAX_ORDER} (the tools are built with "
            f"KENLM_MAX_ORDER={KENLM_MAX_ORDER}). Received: order={order}"
        )
    return int(order)


def build_lm(
    sentences: Iterable[str],
    output_dir: str | Path,
    order: int = 4,
    name: str = "lm",
    normalize: Callable[[str], str] | None = None,
    tools: KenLMTools | None = None,
    memory: str = "1G",
    prune: Sequence[int] = (),
) -> LMFiles:
    """Estimates a modified Kneser-Ney n-gram model with KenLM.

    Args:
        sentences: Training text, one sentence per item.
        output_dir: Folder for ``<name>.arpa``, ``<name>.binary``, ``<name>.unigrams.txt``
            and the normalised ``<name>.corpus.txt``.
        order: N-gram order (2..6).
        name: File name stem.
        normalize: Text normaliser (use the vocabulary's).
        tools: KenLM programs (default: `require_kenlm_tools`).
        memory: ``lmplz -S`` sort memory (``"1G"``, ``"20%"``).
        prune: ``lmplz --prune`` counts per order (e.g. ``(0, 0, 1)``); empty = no pruning.

    Returns:
        The written files and corpus counts.

    Raises:
        ValueError: Bad order or an empty corpus.
        KenLMToolsError: The programs are missing or failed.
    """
    order = _check_order(order)
    tools = tools or require_kenlm_tools()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    corpus = output / f"{name}.corpus.txt"
    words: set[str] = set()
    num_sentences = num_words = 0
    with open(corpus, "w", encoding="utf-8") as handle:
        for text in normalize_corpus(sentences, normalize):
            tokens = text.split()
            words.update(tokens)
            num_sentences += 1
            num_words += len(tokens)
            handle.write(text + "\n")
    if not num_sentences:
        raise ValueError(f"The LM corpus is empty after normalisation. Received: {corpus}")
    files = LMFiles(
        arpa=output / f"{name}.arpa",
        binary=output / f"{name}.binary",
        unigrams=output / f"{name}.unigrams.txt",
        order=order,
        num_sentences=num_sentences,
        num_words=num_words,
    )
    log = output / f"{name}.build.log"
    log.write_text("", encoding="utf-8")
    # --discount_fallback: tiny corpora (a recipe's transcripts) lack the count
    # statistics Kneser-Ney discounts are estimated from; big ones never use it.
    command = [str(tools.lmplz), "-o", str(order), "-S", memory, "-T", str(output),
               "--discount_fallback", "--text", str(corpus), "--arpa", str(files.arpa)]  # fmt: skip
    if prune:
        command += ["--prune", *map(str, prune)]
    _run(command, log)
    _run([str(tools.build_binary), str(files.arpa), str(files.binary)], log)
    files.unigrams.write_text("".join(f"{word}\n" for word in sorted(words)), encoding="utf-8")
    return files


def score_sentences(
    lm_path: str | Path, sentences: Sequence[str], tools: KenLMTools | None = None
) -> list[float]:
    """Log10 probability of each sentence (with ``<s>``/``</s>``) under a KenLM model.

    Args:
        lm_path: ARPA or binary model.
        sentences: Already normalised sentences.
        tools: KenLM programs (default: `require_kenlm_tools`).

    Returns:
        One total log10 probability per sentence, in order.
    """
    tools = tools or require_kenlm_tools()
    text = "".join(" ".join(sentence.split()) + "\n" for sentence in sentences)
    result = subprocess.run(
        [str(tools.query), "-v", "sentence", str(lm_path)],
        input=text,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise KenLMToolsError(f"KenLM query failed on {lm_path}: {result.stderr.strip()[-500:]}")
    totals = [float(match) for match in re.findall(r"Total: (\S+)", result.stdout)]
    if len(totals) != len(sentences):
        raise KenLMToolsError(
            f"KenLM query returned {len(totals)} scores for {len(sentences)} sentences"
        )
    return totals


# ---------------------------------------------------------------------------
# Tuning alpha/beta


@dataclass(frozen=True)
class TuneTrial:
    """WER of one (alpha, beta) pair."""

    alpha: float
    beta: float
    wer: float


@dataclass(frozen=True)
class TuneResult:
    """All trials and the best one (lowest WER; ties go to the smaller alpha, then beta)."""

    best: TuneTrial
    trials: list[TuneTrial]


def weight_grid(
    alphas: Sequence[float],
    betas: Sequence[float],
    num_random: int = 0,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """The (alpha, beta) pairs to try.

    Args:
        alphas: Alpha values (grid) or, with ``num_random``, the ``(min, max)`` range.
        betas: Beta values or range, likewise.
        num_random: 0 for the full grid; else that many uniform random pairs.
        seed: Random seed.

    Returns:
        The pairs, in trial order.
    """
    if not alphas or not betas:
        raise ValueError(f"Need alphas and betas. Received: alphas={alphas}, betas={betas}")
    if num_random <= 0:
        return [(float(a), float(b)) for a in alphas for b in betas]
    rng = random.Random(seed)
    low_a, high_a, low_b, high_b = min(alphas), max(alphas), min(betas), max(betas)
    return [
        (round(rng.uniform(low_a, high_a), 4), round(rng.uniform(low_b, high_b), 4))
        for _ in range(num_random)
    ]


def _corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    import jiwer

    return float(jiwer.wer(list(references), list(hypotheses)))


def tune_lm_weights(
    log_probs: Sequence[np.ndarray],
    references: Sequence[str],
    decoder_factory: Callable[[float, float], Decoder],
    pairs: Sequence[tuple[float, float]],
    on_trial: Callable[[TuneTrial], None] | None = None,
) -> TuneResult:
    """Decodes a dev set with each (alpha, beta) and keeps the lowest corpus WER.

    Args:
        log_probs: Per utterance, ``[T, C]`` log-probabilities of its real frames.
        references: Normalised reference transcripts (non-empty), same order.
        decoder_factory: ``(alpha, beta) -> decoder`` (e.g. a `make_decoder` partial).
        pairs: The (alpha, beta) pairs, e.g. from `weight_grid`.
        on_trial: Called after each trial (progress reporting).

    Returns:
        Every trial and the best.
    """
    if len(log_probs) != len(references) or not references:
        raise ValueError(
            "Need one reference per utterance and at least one utterance. Received: "
            f"{len(log_probs)} log-prob arrays, {len(references)} references"
        )
    empty = [i for i, reference in enumerate(references) if not reference.strip()]
    if empty:
        raise ValueError(f"References must not be empty (WER is undefined). Received: {empty[:5]}")
    batch, lengths = _pad(log_probs)
    trials = []
    for alpha, beta in pairs:
        results = decoder_factory(alpha, beta).decode_batch(batch, lengths)
        trial = TuneTrial(alpha, beta, _corpus_wer(references, [r.text for r in results]))
        trials.append(trial)
        if on_trial:
            on_trial(trial)
    best = min(trials, key=lambda t: (t.wer, t.alpha, t.beta))
    return TuneResult(best, trials)


def _pad(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stacks ``[T_i, C]`` arrays into ``[B, T_max, C]`` plus lengths ``[B]``."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    batch = np.zeros((len(arrays), max(int(lengths.max()), 1), arrays[0].shape[-1]), np.float32)
    for row, array in enumerate(arrays):
        batch[row, : len(array)] = array  # [B, T_max, C]
    return batch, lengths


# ---------------------------------------------------------------------------
# Experiment glue (used by the CLI)


def experiment_transcripts(exp_dir: str | Path) -> tuple[list[str], Callable[[str], str]]:
    """Training transcripts of an experiment and its vocabulary's normaliser."""
    from stenograph.pipeline.manifest import read_manifest
    from stenograph.pipeline.text import Vocabulary

    from .config import ExperimentConfig
    from .experiment import CONFIG_FILE, VOCABULARY_FILE

    exp = Path(exp_dir)
    config = ExperimentConfig.load(exp / CONFIG_FILE)
    vocabulary = Vocabulary.load(exp / VOCABULARY_FILE)
    if not config.data.train_manifest:
        raise ValueError(f"{exp / CONFIG_FILE} names no data.train_manifest to build an LM from")
    utterances = read_manifest(config.data.train_manifest, allow_outside_root=True)
    return [u.text for u in utterances], vocabulary.normalize


def experiment_log_probs(
    exp_dir: str | Path, manifest: str | Path, limit: int = 0, allow_outside_root: bool = False
) -> tuple[Any, list[np.ndarray], list[str]]:
    """Runs an experiment's model over a manifest once.

    The manifest's audio is confined as `stenograph evaluate` confines it
    (`data.load_utterances`).

    Args:
        exp_dir: The experiment folder.
        manifest: The dev manifest.
        limit: Use the first `limit` utterances (0: all).
        allow_outside_root: Accept audio outside the manifest's folder and the
            experiment's `data.audio_root`.

    Returns:
        ``(vocabulary, log_probs, references)``: per utterance, ``[T, C]``
        log-probabilities of its real frames and its normalised transcript.

    Raises:
        ValueError: If no line of the manifest is usable (with the reasons).
    """
    import tensorflow as tf

    from .data import load_utterances_to_score, make_dataset
    from .experiment import load_experiment

    experiment = load_experiment(exp_dir)
    utterances, _ = load_utterances_to_score(
        manifest, experiment.config.data, limit, allow_outside_root
    )
    references = {u.id: experiment.vocabulary.normalize(u.text) for u in utterances}
    dataset = make_dataset(utterances, experiment.vocabulary, experiment.config, training=False)
    log_probs, texts = [], []
    for batch in dataset:
        logits, logit_lengths = experiment.model(
            [batch.features, batch.feature_lengths], training=False
        )
        batch_log_probs = tf.nn.log_softmax(logits).numpy()  # [B, T, C]
        for name, row, length in zip(
            batch.utterance_ids.numpy(), batch_log_probs, logit_lengths.numpy(), strict=True
        ):
            log_probs.append(row[:length])
            texts.append(references[name.decode("utf-8")])
    return experiment.vocabulary, log_probs, texts


def write_decoding_choice(exp_dir: str | Path, choice: dict[str, Any]) -> Path:
    """Writes the tuned decoder settings to ``<exp_dir>/decoding.json``.

    File paths are stored absolute, so the choice means the same from any directory.
    """
    path = Path(exp_dir) / DECODING_FILE
    choice = {
        key: str(Path(value).absolute()) if key in ("lm_path", "dev_manifest") and value else value
        for key, value in choice.items()
    }
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(choice, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


# ---------------------------------------------------------------------------
# Command line


def _float_list(text: str) -> list[float]:
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``stenograph lm {install-tools,build,tune}``."""
    from .data import add_allow_outside_root_argument  # imports TensorFlow: not at module level

    parser = subparsers.add_parser("lm", help="build and tune word n-gram language models")
    commands = parser.add_subparsers(dest="lm_command", metavar="LM_COMMAND", required=True)

    tools = commands.add_parser("install-tools", help="build and cache KenLM's programs")
    tools.add_argument("--cache-dir", help="default: ~/.cache/stenograph/kenlm-<version>")
    tools.add_argument("--source", help="a local kenlm-*.tar.gz instead of downloading it")
    tools.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    tools.add_argument("--force", action="store_true", help="rebuild even if cached")
    tools.set_defaults(handler=run_install_tools)

    build = commands.add_parser("build", help="estimate an n-gram LM (ARPA + KenLM binary)")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--exp-dir", help="use this experiment's training transcripts")
    source.add_argument("--text", nargs="+", help="text files, one sentence per line")
    source.add_argument("--manifest", nargs="+", help="JSON-lines manifests (their text)")
    build.add_argument("--output-dir", help="default: <exp-dir>/lm")
    build.add_argument("--order", type=int, default=4)
    build.add_argument("--name", default="lm", help="file name stem")
    build.add_argument("--memory", default="1G", help="lmplz sort memory (e.g. 1G, 20%%)")
    build.add_argument("--prune", type=int, nargs="*", default=[], help="lmplz --prune counts")
    build.set_defaults(handler=run_build)

    tune = commands.add_parser("tune", help="search LM weights alpha/beta on a dev manifest")
    tune.add_argument("--exp-dir", required=True)
    tune.add_argument("--manifest", required=True, help="dev manifest (JSON lines)")
    tune.add_argument("--lm", dest="lm_path", help="default: <exp-dir>/lm/lm.binary")
    tune.add_argument("--alphas", type=_float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    tune.add_argument("--betas", type=_float_list, default=[0.0, 0.5, 1.0, 2.0, 3.0])
    tune.add_argument("--random", type=int, default=0, help="N random pairs within the ranges")
    tune.add_argument("--beam-width", type=int, default=DEFAULT_BEAM_WIDTH)
    tune.add_argument(
        "--unk-score-offset",
        type=float,
        default=DEFAULT_UNK_SCORE_OFFSET,
        help="score added per word outside the LM's word list (e.g. -30 for a closed "
        "vocabulary); recorded with alpha/beta",
    )
    tune.add_argument("--limit", type=int, default=0, help="use the first N utterances")
    add_allow_outside_root_argument(tune)
    tune.add_argument("--no-write", action="store_true", help="do not write decoding.json")
    tune.set_defaults(handler=run_tune)


def run_install_tools(args: argparse.Namespace) -> int:
    """``stenograph lm install-tools``."""
    try:
        tools = install_kenlm_tools(args.cache_dir, args.source, args.jobs, args.force)
    except KenLMToolsError as error:
        print(f"lm install-tools: {error}", file=sys.stderr)
        return 1
    print(f"lm install-tools: ready: {tools.lmplz.parent}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    """``stenograph lm build``."""
    normalize = None
    if args.exp_dir:
        sentences, normalize = experiment_transcripts(args.exp_dir)
    elif args.manifest:
        from stenograph.pipeline.manifest import read_manifest

        sentences = [u.text for m in args.manifest for u in read_manifest(m)]
    else:
        sentences = read_text_files(args.text)
    output_dir = args.output_dir or (Path(args.exp_dir) / "lm" if args.exp_dir else None)
    if output_dir is None:
        raise ValueError("lm build: give --output-dir (or --exp-dir to write <exp-dir>/lm)")
    try:
        files = build_lm(sentences, output_dir, args.order, args.name, normalize,
                         memory=args.memory, prune=args.prune)  # fmt: skip
    except KenLMToolsError as error:
        print(f"lm build: {error}", file=sys.stderr)
        return 1
    print(
        f"lm build: {files.order}-gram from {files.num_sentences} sentences, "
        f"{files.num_words} words -> {files.binary} ({files.arpa.name}, {files.unigrams.name})"
    )
    return 0


def run_tune(args: argparse.Namespace) -> int:
    """``stenograph lm tune``."""
    lm_path = Path(args.lm_path or Path(args.exp_dir) / "lm" / "lm.binary")
    if not lm_path.is_file():
        raise FileNotFoundError(f"No language model at {lm_path}; run `stenograph lm build`")
    vocabulary, log_probs, references = experiment_log_probs(
        args.exp_dir, args.manifest, args.limit, args.allow_outside_root
    )
    kept = [(lp, ref) for lp, ref in zip(log_probs, references, strict=True) if ref]
    if not kept:
        raise ValueError(
            f"No utterance of the dev manifest has a non-empty transcript. Received: "
            f"manifest={args.manifest!r}"
        )
    greedy = make_decoder("greedy", vocabulary).decode_batch(*_pad([lp for lp, _ in kept]))
    greedy_wer = _corpus_wer([ref for _, ref in kept], [r.text for r in greedy])
    print(f"lm tune: {len(kept)} utterances; greedy WER {greedy_wer:.2%}")

    def factory(alpha: float, beta: float) -> Decoder:
        return make_decoder(
            "lm",
            vocabulary,
            args.beam_width,
            lm_path,
            alpha,
            beta,
            unk_score_offset=args.unk_score_offset,
        )

    result = tune_lm_weights(
        [lp for lp, _ in kept],
        [ref for _, ref in kept],
        factory,
        weight_grid(args.alphas, args.betas, args.random),
        on_trial=lambda t: print(f"  alpha={t.alpha:<6g} beta={t.beta:<6g} WER {t.wer:.2%}"),
    )
    best = result.best
    print(f"lm tune: best alpha={best.alpha:g} beta={best.beta:g} WER {best.wer:.2%}")
    if not args.no_write:
        path = write_decoding_choice(
            args.exp_dir,
            {
                "decoder": "lm",
                "lm_path": str(lm_path),
                "alpha": best.alpha,
                "beta": best.beta,
                "beam_width": args.beam_width,
                "unk_score_offset": args.unk_score_offset,
                "dev_manifest": str(args.manifest),
                "dev_wer": best.wer,
                "greedy_wer": greedy_wer,
                "trials": [dataclasses.asdict(t) for t in result.trials],
            },
        )
        print(f"lm tune: wrote {path}")
    return 0
