"""Decoders from CTC log-probabilities to text, token ids and word times.

    decoder = make_decoder("lm", vocabulary, lm_path="exp/demo/lm/lm.binary",
                           alpha=0.5, beta=1.0, beam_width=64, hotwords=["kitchen:8"])
    results = decoder.decode_batch(log_probs, lengths)   # [B, T, C], [B]
    results[0].text, results[0].word_times                # "turn on the kitchen ...", [(w, s, e)]

Three kinds share one interface (`decode_batch`):

- ``greedy``: best path (argmax per frame, merge repeats, drop blanks), in numpy.
  Word times come from the CTC alignment itself.
- ``beam``: CTC prefix beam search without a language model (hotwords allowed).
- ``lm``: the same search fused with a KenLM word n-gram model: each word's score
  adds ``alpha * log P_lm(word | history) + beta`` (pyctcdecode's shallow fusion).

Beam and LM search run in a pyctcdecode-compatible engine. Two backends are
supported with the same constructor and results: ``ctc-beam-decoder`` (a C++
reimplementation of pyctcdecode with KenLM bundled, no numpy pin; the
default) and ``pyctcdecode`` itself (pure Python, pins numpy<2, so it is not a
declared dependency; install it with ``pip install --no-deps pyctcdecode pygtrie``
plus ``kenlm`` to use it). benchmarks/README.md records how they compare.

Word times are ``(word, start_frame, end_frame)`` with ``end_frame`` exclusive:
the first frame of the word's first character and one past the last frame of
its last character, for every decoder. Multiply by the model's seconds per
frame to get seconds.

Token convention: id 0 is the CTC blank; ``vocabulary.tokens[i]`` is the
character with id ``i``; the space token ``" "`` separates words.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

__all__ = [
    "BACKENDS",
    "DecodeResult",
    "Decoder",
    "GreedyDecoder",
    "PrefixBeamDecoder",
    "choose_backend",
    "describe_decoder",
    "make_decoder",
    "parse_hotwords",
    "greedy_path",
    "read_tuned_decoding",
    "read_unigrams",
    "tuned_lm_available",
    "unigrams_path_for",
    "with_tuned_defaults",
    "words_from_alignment",
]

_log = logging.getLogger("stenograph")

DecoderKind = Literal["greedy", "beam", "lm"]
WordTime = tuple[str, int, int]

#: Backend name -> importable module, in order of preference.
BACKENDS: dict[str, str] = {"ctc-beam-decoder": "ctc_beam_decoder", "pyctcdecode": "pyctcdecode"}

DEFAULT_BEAM_WIDTH = 64
DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.0
DEFAULT_HOTWORD_WEIGHT = 10.0
#: Added to the score of a word the LM's word list does not hold (pyctcdecode's
#: default). Much lower values confine the search to known words, for closed
#: vocabularies such as command sets.
DEFAULT_UNK_SCORE_OFFSET = -10.0
SPACE = " "
#: Written into an experiment by `stenograph lm tune` (and the recipes' LM stage).
TUNED_DECODING_FILE = "decoding.json"
EXPORT_EXTRA_DIR = "assets.extra"  # where an export keeps its copy (see recipes.export)
_TUNED_KEYS = ("lm_path", "alpha", "beta", "beam_width", "unk_score_offset")


@dataclass(frozen=True)
class DecodeResult:
    """One decoded utterance.

    Attributes:
        text: The transcript (words separated by single spaces).
        token_ids: Vocabulary ids of ``text`` (no blanks).
        word_times: ``(word, start_frame, end_frame)`` per word, ``end_frame`` exclusive.
    """

    text: str
    token_ids: list[int]
    word_times: list[WordTime] = field(default_factory=list)


class Decoder(Protocol):
    """What `make_decoder` returns."""

    def decode_batch(self, log_probs: np.ndarray, lengths: np.ndarray) -> list[DecodeResult]:
        """Decodes ``[B, T, C]`` log-probabilities with ``[B]`` frame counts."""
        ...


# ---------------------------------------------------------------------------
# Shared checks and helpers


def _tokens_of(vocabulary: Any) -> list[str]:
    """Accepts a `pipeline.text.Vocabulary` (uses ``.tokens``) or a plain token list."""
    tokens = list(getattr(vocabulary, "tokens", vocabulary))
    if len(tokens) < 2:
        raise ValueError(
            f"A vocabulary needs the blank plus at least one token. Received: tokens={tokens!r}"
        )
    for token_id, token in enumerate(tokens[1:], start=1):
        if not isinstance(token, str) or not token:
            raise ValueError(
                "Vocabulary tokens after the blank must be non-empty strings. "
                f"Received: tokens[{token_id}]={token!r}"
            )
    return tokens


def _check_batch(log_probs: np.ndarray, lengths: np.ndarray, num_classes: int) -> np.ndarray:
    """Validates shapes and returns the lengths clipped to the frame axis."""
    log_probs = np.asarray(log_probs)
    lengths = np.asarray(lengths).reshape(-1)
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be [B, T, C]. Received: shape={log_probs.shape}")
    if log_probs.shape[2] != num_classes:
        raise ValueError(
            f"log_probs have {log_probs.shape[2]} classes but the vocabulary has {num_classes} "
            f"(blank included). Received: shape={log_probs.shape}"
        )
    if lengths.shape[0] != log_probs.shape[0]:
        raise ValueError(
            f"lengths must have one entry per batch row. Received: lengths.shape={lengths.shape}, "
            f"log_probs.shape={log_probs.shape}"
        )
    if (lengths < 0).any():
        raise ValueError(f"lengths must be >= 0. Received: lengths={lengths.tolist()}")
    return np.minimum(lengths, log_probs.shape[1]).astype(np.int64)


def _encode(text: str, token_ids: dict[str, int]) -> list[int]:
    """Maps decoded characters back to ids (every character came from the vocabulary)."""
    return [token_ids[char] for char in text]


# ---------------------------------------------------------------------------
# Greedy


def greedy_path(log_probs: np.ndarray, blank_id: int = 0) -> list[tuple[int, int, int]]:
    """Best-path CTC alignment of one utterance.

    Args:
        log_probs: ``[T, C]`` scores of the real frames only.
        blank_id: The blank's class id.

    Returns:
        ``(token_id, first_frame, end_frame)`` per emitted token (repeats merged,
        blanks dropped), ``end_frame`` exclusive.
    """
    best = np.asarray(log_probs).argmax(axis=-1)  # [T]
    emitted: list[tuple[int, int, int]] = []
    previous = -1
    for frame, token in enumerate(best.tolist()):
        if token == previous and token != blank_id:
            emitted[-1] = (token, emitted[-1][1], frame + 1)  # the run goes on: extend it
        elif token != blank_id:
            emitted.append((token, frame, frame + 1))
        previous = token
    return emitted


def words_from_alignment(
    emitted: Sequence[tuple[int, int, int]], tokens: Sequence[str]
) -> tuple[str, list[WordTime]]:
    """Text and word times from an alignment given by `greedy_path`.

    Spaces separate words; leading, trailing and repeated spaces are dropped
    from the text (as the beam decoders do), so the text is ``" ".join(words)``.
    """
    words: list[WordTime] = []
    chars: list[str] = []
    start = end = -1
    for token_id, first, last in [*emitted, (-1, -1, -1)]:
        is_boundary = token_id == -1 or tokens[token_id] == SPACE
        if is_boundary:
            if chars:
                words.append(("".join(chars), start, end))
            chars = []
            continue
        if not chars:
            start = first
        chars.append(tokens[token_id])
        end = last
    text = SPACE.join(word for word, _, _ in words)
    return text, words


class GreedyDecoder:
    """Best-path decoding with word times from the CTC alignment.

    Args:
        vocabulary: A `Vocabulary` or a token list (index = id, blank at 0).
    """

    def __init__(self, vocabulary: Any) -> None:
        self.tokens = _tokens_of(vocabulary)
        self._token_ids = {token: i for i, token in enumerate(self.tokens) if i != 0}

    def decode_batch(self, log_probs: np.ndarray, lengths: np.ndarray) -> list[DecodeResult]:
        """Decodes ``[B, T, C]`` log-probabilities (or logits) with ``[B]`` frame counts."""
        lengths = _check_batch(log_probs, lengths, len(self.tokens))
        results = []
        for row, length in zip(np.asarray(log_probs), lengths, strict=True):
            text, words = words_from_alignment(greedy_path(row[:length]), self.tokens)
            results.append(DecodeResult(text, _encode(text, self._token_ids), words))
        return results


# ---------------------------------------------------------------------------
# Prefix beam search (with or without a language model)


def choose_backend(requested: str, available: Sequence[str]) -> str:
    """Picks the beam-search backend.

    Args:
        requested: ``"auto"`` or a name from `BACKENDS`.
        available: Backend names whose module can be imported.

    Returns:
        The backend to use: the requested one, or with ``"auto"`` the first
        available in `BACKENDS` order.

    Raises:
        ValueError: Unknown name.
        ImportError: Nothing usable is installed; says what to install.
    """
    if requested != "auto" and requested not in BACKENDS:
        raise ValueError(
            f"Unknown decoder backend; choose 'auto' or one of {sorted(BACKENDS)}. "
            f"Received: backend={requested!r}"
        )
    wanted = list(BACKENDS) if requested == "auto" else [requested]
    for name in wanted:
        if name in available:
            return name
    raise ImportError(
        f"Beam/LM decoding needs the {' or '.join(wanted)} package, which is not installed. "
        "Install it with `pip install ctc-beam-decoder` (a stenograph dependency), or "
        "`pip install --no-deps pyctcdecode pygtrie kenlm` for the pure-Python backend."
    )


def _available_backends() -> list[str]:
    return [name for name, module in BACKENDS.items() if importlib.util.find_spec(module)]


def parse_hotwords(
    hotwords: Sequence[str], default_weight: float = DEFAULT_HOTWORD_WEIGHT
) -> tuple[list[str], float]:
    """Parses ``WORD[:weight]`` hotword options.

    Both backends apply one weight to all hotwords of a decoder, so the words
    may carry at most one distinct weight, which then applies to all of them
    (``["kitchen:8", "oven"]`` boosts both by 8).

    Args:
        hotwords: Strings like ``"kitchen"`` or ``"kitchen:8"``; a hotword may be
            several words (``"new york:5"``).
        default_weight: The weight when no word carries one.

    Returns:
        ``(words, weight)``.

    Raises:
        ValueError: A malformed weight, an empty word, or two different weights.
    """
    words: list[str] = []
    weights: set[float] = set()
    for item in hotwords:
        word, sep, weight_text = item.rpartition(":") if ":" in item else (item, "", "")
        word = " ".join(word.split())
        if not word:
            raise ValueError(f"A hotword must not be empty. Received: hotword={item!r}")
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise ValueError(
                    f"A hotword weight must be a number (WORD[:weight]). Received: {item!r}"
                ) from None
            if not math.isfinite(weight):
                raise ValueError(f"A hotword weight must be finite. Received: {item!r}")
            weights.add(weight)
        words.append(word)
    if len(weights) > 1:
        raise ValueError(
            "All hotwords of one decoder share one weight (the beam search applies a single "
            f"boost). Received weights: {sorted(weights)}"
        )
    return words, weights.pop() if weights else float(default_weight)


def unigrams_path_for(lm_path: str | Path) -> Path:
    """Where `stenograph lm build` writes the word list of model ``lm_path``.

    ``lm.binary`` / ``lm.arpa`` -> ``lm.unigrams.txt`` in the same folder.
    """
    path = Path(lm_path)
    return path.with_name(path.name.split(".")[0] + ".unigrams.txt")


def read_unigrams(path: str | Path) -> list[str]:
    """Reads a word list (one word per line, blank lines ignored)."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _resolve_unigrams(lm_path: Path, unigrams: Sequence[str] | None) -> list[str] | None:
    """The LM's vocabulary: given, beside the model, or (ARPA) read by the backend.

    Without it the search counts every partial word as unknown and pays the
    unknown-word penalty, which makes LM decoding much worse.
    """
    if unigrams is not None:
        return list(unigrams)
    sidecar = unigrams_path_for(lm_path)
    if sidecar.is_file():
        return read_unigrams(sidecar)
    if lm_path.suffix != ".arpa":
        _log.warning(
            "no word list for %s (expected %s): LM decoding without the LM's vocabulary is "
            "much less accurate; `stenograph lm build` writes one",
            lm_path,
            sidecar,
        )
    return None


class PrefixBeamDecoder:
    """CTC prefix beam search, optionally fused with a KenLM model, with hotwords.

    Args:
        vocabulary: A `Vocabulary` or a token list (index = id, blank at 0).
        beam_width: Prefixes kept per frame.
        lm_path: KenLM model (``.arpa`` or binary); None for no language model.
        alpha: LM weight (used with ``lm_path``).
        beta: Word insertion bonus (used with ``lm_path``).
        hotwords: Words or phrases to boost.
        hotword_weight: The boost, in log-probability per character matched.
        unigrams: The LM's word list; by default read from ``<lm>.unigrams.txt``.
        backend: ``"auto"``, ``"ctc-beam-decoder"`` or ``"pyctcdecode"``.
        unk_score_offset: Added to the score of each word outside the LM's word list.
        beam_prune_logp: Beams this far below the best are dropped.
        token_min_logp: Tokens below this log-probability are skipped unless best.
    """

    def __init__(
        self,
        vocabulary: Any,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        lm_path: str | Path | None = None,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        hotwords: Sequence[str] = (),
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        unigrams: Sequence[str] | None = None,
        backend: str = "auto",
        unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET,
        beam_prune_logp: float = -10.0,
        token_min_logp: float = -5.0,
    ) -> None:
        if int(beam_width) < 1:
            raise ValueError(f"beam_width must be >= 1. Received: beam_width={beam_width}")
        self.tokens = _tokens_of(vocabulary)
        self._token_ids = {token: i for i, token in enumerate(self.tokens) if i != 0}
        self.beam_width = int(beam_width)
        self.hotwords = list(hotwords)
        self.hotword_weight = float(hotword_weight)
        self.beam_prune_logp = float(beam_prune_logp)
        self.token_min_logp = float(token_min_logp)
        self.unk_score_offset = float(unk_score_offset)
        self.backend = choose_backend(backend, _available_backends())
        self.lm_path = None if lm_path is None else Path(lm_path)
        self._engine = self._build_engine(alpha, beta, unigrams)

    def _build_engine(self, alpha: float, beta: float, unigrams: Sequence[str] | None) -> Any:
        module = importlib.import_module(BACKENDS[self.backend])
        # The engines take "" as the blank; it must stay at column 0.
        labels = ["", *self.tokens[1:]]
        if self.lm_path is None:
            return module.build_ctcdecoder(labels)
        if not self.lm_path.is_file():
            raise FileNotFoundError(
                f"Language model not found. Received: lm_path={str(self.lm_path)!r}"
            )
        return module.build_ctcdecoder(
            labels,
            kenlm_model_path=str(self.lm_path),
            unigrams=_resolve_unigrams(self.lm_path, unigrams),
            alpha=float(alpha),
            beta=float(beta),
            unk_score_offset=self.unk_score_offset,
        )

    def decode_one(self, log_probs: np.ndarray) -> DecodeResult:
        """Decodes one utterance's ``[T, C]`` log-probabilities (real frames only)."""
        if log_probs.shape[0] == 0:
            return DecodeResult("", [], [])
        beams = self._engine.decode_beams(
            np.ascontiguousarray(log_probs, dtype=np.float32),
            beam_width=self.beam_width,
            beam_prune_logp=self.beam_prune_logp,
            token_min_logp=self.token_min_logp,
            hotwords=self.hotwords or None,
            hotword_weight=self.hotword_weight,
        )
        if not beams:
            return DecodeResult("", [], [])
        text, _, word_frames, *_ = beams[0]
        text = SPACE.join(text.split())
        words = [(word, int(start), int(end)) for word, (start, end) in word_frames]
        return DecodeResult(text, _encode(text, self._token_ids), words)

    def decode_batch(self, log_probs: np.ndarray, lengths: np.ndarray) -> list[DecodeResult]:
        """Decodes ``[B, T, C]`` log-probabilities (or logits) with ``[B]`` frame counts."""
        lengths = _check_batch(log_probs, lengths, len(self.tokens))
        log_probs = np.asarray(log_probs)
        return [
            self.decode_one(row[:length]) for row, length in zip(log_probs, lengths, strict=True)
        ]


def make_decoder(
    kind: DecoderKind = "greedy",
    vocabulary: Any = None,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    lm_path: str | Path | None = None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    hotwords: Sequence[str] = (),
    hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
    unigrams: Sequence[str] | None = None,
    backend: str = "auto",
    unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET,
) -> Decoder:
    """Builds a decoder.

    Args:
        kind: ``"greedy"``, ``"beam"`` (no LM) or ``"lm"`` (needs ``lm_path``).
        vocabulary: A `pipeline.text.Vocabulary` or a token list (index = id, blank 0).
        beam_width: Prefixes kept per frame (beam and lm).
        lm_path: KenLM model, ARPA or binary (lm only).
        alpha: LM weight (lm only).
        beta: Word insertion bonus (lm only).
        hotwords: ``WORD[:weight]`` strings to boost (beam and lm).
        hotword_weight: Weight for hotwords given without one.
        unigrams: The LM's word list; default ``<lm>.unigrams.txt`` beside the model.
        backend: Beam-search engine, see `BACKENDS`.
        unk_score_offset: Score added per word outside the LM's word list (lm only).

    Returns:
        An object with ``decode_batch(log_probs, lengths) -> list[DecodeResult]``.

    Raises:
        ValueError: Unknown kind, a missing ``lm_path`` for ``"lm"``, an LM or
            hotwords given to ``"greedy"``, or an LM given to ``"beam"``.
    """
    if vocabulary is None:
        raise ValueError("make_decoder needs a vocabulary. Received: vocabulary=None")
    if kind not in ("greedy", "beam", "lm"):
        raise ValueError(f"kind must be 'greedy', 'beam' or 'lm'. Received: kind={kind!r}")
    if kind == "lm" and lm_path is None:
        raise ValueError(
            "kind='lm' needs lm_path: give --lm PATH (build one with `stenograph lm build`), "
            "or run `stenograph lm tune` so the experiment's decoding.json names it."
        )
    if kind != "lm" and lm_path is not None:
        raise ValueError(
            f"lm_path is only used by kind='lm'. Received: kind={kind!r}, lm_path={lm_path!r}"
        )
    if kind == "greedy":
        if hotwords:
            raise ValueError(
                f"Hotwords need beam search (kind='beam' or 'lm'). Received: hotwords={hotwords!r}"
            )
        return GreedyDecoder(vocabulary)
    words, weight = parse_hotwords(hotwords, hotword_weight)
    return PrefixBeamDecoder(
        vocabulary,
        beam_width=beam_width,
        lm_path=lm_path,
        alpha=alpha,
        beta=beta,
        hotwords=words,
        hotword_weight=weight,
        unigrams=unigrams,
        backend=backend,
        unk_score_offset=unk_score_offset,
    )


def read_tuned_decoding(model_dir: str | Path) -> dict[str, Any]:
    """The LM decoder settings `stenograph lm tune` chose for a model folder.

    Args:
        model_dir: An experiment folder (or an export holding a copy of the file).

    Returns:
        ``lm_path``, ``alpha``, ``beta``, ``beam_width`` and ``unk_score_offset``
        where recorded; empty when the folder has no ``decoding.json`` or it cannot
        be read (logged).
    """
    path = Path(model_dir) / TUNED_DECODING_FILE
    if not path.is_file():  # an export keeps its copy beside its metadata
        path = Path(model_dir) / EXPORT_EXTRA_DIR / TUNED_DECODING_FILE
    if not path.is_file():
        return {}
    try:
        choice = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        _log.warning("ignoring %s: %s", path, e)
        return {}
    if not isinstance(choice, dict):
        _log.warning("ignoring %s: not a JSON object", path)
        return {}
    tuned = {key: choice[key] for key in _TUNED_KEYS if choice.get(key) is not None}
    if "lm_path" in tuned:
        tuned["lm_path"] = _resolve_lm_path(tuned["lm_path"], path.parent)
    return tuned


def _resolve_lm_path(lm_path: str, folder: Path) -> str:
    """A recorded LM path made absolute.

    An export's bundled LM is relative to its decoding.json; choices written before
    paths were stored absolute may be relative to the directory `lm tune` ran in.
    """
    path = Path(lm_path)
    if path.is_absolute():
        return str(path)
    beside = folder / path
    return str(beside if beside.exists() or not path.exists() else path.absolute())


def tuned_lm_available(model_dir: str | Path) -> bool:
    """Whether the model folder names a tuned LM that exists (``--decoder auto`` -> lm)."""
    lm_path = read_tuned_decoding(model_dir).get("lm_path")
    return bool(lm_path) and Path(lm_path).is_file()


def with_tuned_defaults(options: dict[str, Any], model_dir: str | Path) -> dict[str, Any]:
    """Fills the unset settings of an LM decoder from the model's ``decoding.json``.

    So ``--decoder lm`` alone uses the LM and the alpha/beta tuned on dev data,
    while anything given explicitly wins. Other decoder kinds are returned unchanged.

    Args:
        options: `make_decoder` keyword arguments (``kind`` included).
        model_dir: The experiment (or export) folder.

    Returns:
        A new options dict.
    """
    if options.get("kind") != "lm":
        return dict(options)
    tuned = read_tuned_decoding(model_dir)
    filled = {key: value for key, value in tuned.items() if options.get(key) is None}
    if filled:
        settings = ", ".join(f"{key}={value}" for key, value in filled.items())
        _log.debug("LM decoding: %s from %s", settings, Path(model_dir) / TUNED_DECODING_FILE)
    return {**options, **filled}


def describe_decoder(options: dict[str, Any]) -> str:
    """One line for the user, e.g. ``"decoder lm (lm.binary, alpha 1.5, beta 3.0, beam 32)"``.

    Args:
        options: `make_decoder` keyword arguments (``kind`` included).
    """
    kind = options["kind"]
    if kind == "greedy":
        return "decoder greedy"
    details = [f"beam {options.get('beam_width', DEFAULT_BEAM_WIDTH)}"]
    if kind == "lm":
        details = [
            Path(options["lm_path"]).name,
            f"alpha {options.get('alpha', DEFAULT_ALPHA)}",
            f"beta {options.get('beta', DEFAULT_BETA)}",
            *details,
        ]
        if options.get("unk_score_offset", DEFAULT_UNK_SCORE_OFFSET) != DEFAULT_UNK_SCORE_OFFSET:
            details.append(f"unknown words {options['unk_score_offset']:g}")
    return f"decoder {kind} ({', '.join(details)})"
