"""Transcript normalisation and the character vocabulary (Python and TF graph ops).

Token convention: id 0 is the CTC blank; ids 1..V are single Unicode characters
(code points after NFKC); a model has ``C = V + 1`` output classes. Characters
not in the vocabulary are dropped by `Vocabulary.encode` (and `encode_tf`) and
can be counted with `Vocabulary.count_unknown` to report them.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import TextError
from .files import atomic_write_text

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "BLANK_ID",
    "BLANK_TOKEN",
    "ENGLISH_ALPHABET",
    "TextNormalizer",
    "Vocabulary",
]

BLANK_ID = 0
BLANK_TOKEN = "<blank>"
ENGLISH_ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"
PunctuationPolicy = Literal["strip", "keep", "space"]
_APOSTROPHES = "'\u2019\u02bc"  # ASCII, right single quote, modifier letter apostrophe
# An apostrophe with a letter or digit on both sides ("don't", "o'clock", "90's").
_INTERNAL_APOSTROPHE = re.compile(f"(?<=[^\\W_])[{_APOSTROPHES}](?=[^\\W_])")
# Internal apostrophes are marked with a private-use character before the per-character
# table runs (which cannot see context); the table turns the mark back into "'".
_KEPT_APOSTROPHE = "\ue000"
_FORMAT_VERSION = 1


def _is_punctuation(char: str) -> bool:
    """Punctuation (P*) and symbols (S*: currency, math, emoji) share one policy."""
    return unicodedata.category(char)[0] in "PS"


def _is_removable_control(char: str) -> bool:
    """Control, format, surrogate, private-use and unassigned code points carry no speech."""
    return unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn") and not char.isspace()


class TextNormalizer:
    """Normalises transcripts: Unicode form, case, punctuation policy, whitespace.

    Apostrophes between two letters (``don't``, ``o'clock``) are kept as ``'`` by
    default whatever the punctuation policy; other punctuation and symbols are
    stripped, kept, or turned into spaces. Control characters are removed; any
    whitespace becomes one space; leading/trailing spaces are dropped.

    Args:
        lowercase: Lower-case the text.
        punctuation: ``"strip"`` (delete), ``"keep"``, or ``"space"`` (replace with a
            space, so ``well-known`` → ``well known``).
        keep_apostrophes: Keep word-internal apostrophes (normalised to ``'``).
        unicode_form: ``"NFKC"`` (default), ``"NFC"``, ``"NFD"``, ``"NFKD"`` or None.
        collapse_whitespace: Collapse whitespace runs and trim the ends.
    """

    def __init__(
        self,
        lowercase: bool = True,
        punctuation: PunctuationPolicy = "space",
        keep_apostrophes: bool = True,
        unicode_form: str | None = "NFKC",
        collapse_whitespace: bool = True,
    ) -> None:
        if punctuation not in ("strip", "keep", "space"):
            raise ValueError(
                "punctuation must be 'strip', 'keep' or 'space'. "
                f"Received: punctuation={punctuation!r}"
            )
        if unicode_form not in ("NFC", "NFD", "NFKC", "NFKD", None):
            raise ValueError(
                f"unicode_form must be NFC, NFD, NFKC, NFKD or None. Received: {unicode_form!r}"
            )
        self.lowercase = lowercase
        self.punctuation = punctuation
        self.keep_apostrophes = keep_apostrophes
        self.unicode_form = unicode_form
        self.collapse_whitespace = collapse_whitespace

    def __call__(self, text: str) -> str:
        """Normalises one transcript (same as `normalize`)."""
        return self.normalize(text)

    def normalize(self, text: str) -> str:
        """Normalises one transcript.

        Args:
            text: Any string.

        Returns:
            The normalised string (possibly empty).

        Raises:
            TextError: If `text` is not a string.
        """
        if not isinstance(text, str):
            raise TextError(
                f"transcript must be a string. Received: {type(text).__name__} {text!r:.80}"
            )
        text = self._unicode(text)
        if self.lowercase:
            text = self._unicode(text.lower())  # lower-casing can denormalise (e.g. "İ")
        if self.keep_apostrophes:
            text = _INTERNAL_APOSTROPHE.sub(_KEPT_APOSTROPHE, text.replace(_KEPT_APOSTROPHE, ""))
        # Removing punctuation can bring a base letter and a combining mark together.
        text = self._unicode(text.translate(self._table))
        if self.collapse_whitespace:
            text = " ".join(text.split())
        return text

    def _unicode(self, text: str) -> str:
        form = self.unicode_form
        if form is None or unicodedata.is_normalized(form, text):
            return text
        return unicodedata.normalize(form, text)

    @functools.cached_property
    def _table(self) -> _CharacterTable:
        return _CharacterTable(self.punctuation)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return {
            "lowercase": self.lowercase,
            "punctuation": self.punctuation,
            "keep_apostrophes": self.keep_apostrophes,
            "unicode_form": self.unicode_form,
            "collapse_whitespace": self.collapse_whitespace,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextNormalizer:
        """Builds a normaliser from `get_config` output."""
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextNormalizer) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"TextNormalizer({args})"


class _CharacterTable(dict):
    """A `str.translate` table filled lazily: code point → replacement (context-free)."""

    def __init__(self, punctuation: PunctuationPolicy) -> None:
        super().__init__()
        self.punctuation = punctuation

    def __missing__(self, code_point: int) -> str:
        self[code_point] = replacement = self._replace(chr(code_point))
        return replacement

    def _replace(self, char: str) -> str:
        if char == _KEPT_APOSTROPHE:
            return "'"
        if char.isspace():
            return " "
        if _is_removable_control(char):
            return ""
        if _is_punctuation(char):
            return {"strip": "", "keep": char, "space": " "}[self.punctuation]
        return char


def _validate_characters(characters: Sequence[str]) -> list[str]:
    characters = list(characters)
    for char in characters:
        if not isinstance(char, str) or len(char) != 1:
            raise TextError(f"vocabulary characters must be single code points. Received: {char!r}")
    duplicates = sorted(c for c, n in collections.Counter(characters).items() if n > 1)
    if duplicates:
        raise TextError(
            f"vocabulary characters must be unique. Received duplicates: {duplicates!r}"
        )
    if not characters:
        raise TextError("a vocabulary needs at least one character. Received: []")
    return characters


class Vocabulary:
    """Character vocabulary with the CTC blank at id 0; characters are ids 1..V.

    Args:
        characters: The V characters (single code points) in id order (id = index + 1).
        normalizer: Applied by `normalize`, `encode` (by default) and `count_unknown`;
            None means text is used as given.
    """

    def __init__(self, characters: Sequence[str], normalizer: TextNormalizer | None = None) -> None:
        self.characters = _validate_characters(characters)
        self.normalizer = normalizer
        self._ids = {char: i + 1 for i, char in enumerate(self.characters)}

    # ----- construction -----------------------------------------------------------

    @classmethod
    def from_transcripts(
        cls, texts: Iterable[str], normalizer: TextNormalizer | None = None, min_count: int = 1
    ) -> Vocabulary:
        """Builds a vocabulary from the characters of (normalised) training transcripts.

        Args:
            texts: Training transcripts.
            normalizer: Applied to each transcript first and stored in the vocabulary.
            min_count: Characters seen fewer times are left out (they will be unknown).

        Returns:
            A vocabulary with characters in code-point order (space, if present, first).
        """
        counts: collections.Counter[str] = collections.Counter()
        for text in texts:
            counts.update(normalizer(text) if normalizer else text)
        characters = sorted(c for c, n in counts.items() if n >= min_count)
        if not characters:
            raise TextError("cannot build a vocabulary: the transcripts contain no characters")
        return cls(characters, normalizer)

    @classmethod
    def from_alphabet(
        cls, characters: Iterable[str], normalizer: TextNormalizer | None = None
    ) -> Vocabulary:
        """Builds a vocabulary from a fixed alphabet, in the given order.

        Args:
            characters: E.g. `ENGLISH_ALPHABET` (``" 'abc…z"``); include ``" "`` for spaces.
            normalizer: Stored and applied by `encode`.
        """
        return cls(list(characters), normalizer)

    # ----- properties ---------------------------------------------------------------

    @property
    def tokens(self) -> list[str]:
        """All tokens, index = id: ``["<blank>", c1, ..., cV]``."""
        return [BLANK_TOKEN, *self.characters]

    @property
    def blank_id(self) -> int:
        """The CTC blank id (always 0)."""
        return BLANK_ID

    @property
    def num_classes(self) -> int:
        """V + 1: the number of model output classes, blank included."""
        return len(self.characters) + 1

    def __len__(self) -> int:
        return self.num_classes

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.characters == other.characters
            and self.normalizer == other.normalizer
        )

    def __hash__(self) -> int:
        return hash((tuple(self.characters), self.normalizer))

    def __repr__(self) -> str:
        return (
            f"Vocabulary(characters={''.join(self.characters)!r}, normalizer={self.normalizer!r})"
        )

    # ----- Python encode/decode -----------------------------------------------------

    def normalize(self, text: str) -> str:
        """Applies the vocabulary's normaliser (identity if it has none)."""
        if not isinstance(text, str):
            raise TextError(
                f"transcript must be a string. Received: {type(text).__name__} {text!r:.80}"
            )
        return self.normalizer(text) if self.normalizer else text

    def encode(self, text: str, normalize: bool = True) -> list[int]:
        """Maps a transcript to ids 1..V, dropping unknown characters.

        Args:
            text: A transcript.
            normalize: Apply the vocabulary's normaliser first.

        Returns:
            The ids (possibly empty).
        """
        text = self.normalize(text) if normalize else text
        return [self._ids[c] for c in text if c in self._ids]

    def count_unknown(
        self, texts: Iterable[str], normalize: bool = True
    ) -> collections.Counter[str]:
        """Counts characters (after normalisation) that `encode` would drop.

        Args:
            texts: Transcripts.
            normalize: Apply the vocabulary's normaliser first.

        Returns:
            A Counter of unknown character → occurrences (empty if all known).
        """
        unknown: collections.Counter[str] = collections.Counter()
        for text in texts:
            text = self.normalize(text) if normalize else text
            unknown.update(c for c in text if c not in self._ids)
        return unknown

    def decode(self, ids: Iterable[int]) -> str:
        """Maps ids back to text, skipping blanks (0) and padding (negative ids).

        This does not merge repeats; CTC decoding (collapse, blank removal) happens
        in the decoder before this.

        Raises:
            TextError: If an id is above V (a model/vocabulary mismatch).
        """
        characters = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id > len(self.characters):
                raise TextError(
                    f"token id {token_id} is outside this vocabulary "
                    f"(ids 1..{len(self.characters)}); the model and vocabulary do not match"
                )
            if token_id > BLANK_ID:
                characters.append(self.characters[token_id - 1])
        return "".join(characters)

    # ----- TF graph ops -------------------------------------------------------------

    def encode_tf(self, strings: tf.Tensor) -> tf.RaggedTensor:
        """Encodes already-normalised strings in-graph; unknown characters are dropped.

        Uses code-point lookup in a sorted constant table (`tf.searchsorted`), so
        the graph holds no hash-table resource and exports/traces anywhere.
        Invalid UTF-8 bytes become U+FFFD and are dropped as unknown.

        Args:
            strings: ``[B]`` tf.string (normalise them in Python with `normalize`).

        Returns:
            ``[B, None]`` int32 RaggedTensor of ids 1..V.
        """
        import tensorflow as tf

        code_points = tf.strings.unicode_decode(strings, "UTF-8", errors="replace")  # [B, None]
        sorted_points, sorted_ids = self._lookup_arrays()
        table = tf.constant(sorted_points, tf.int32)
        values = code_points.flat_values
        index = tf.minimum(tf.searchsorted(table, values), len(sorted_points) - 1)
        found = tf.equal(tf.gather(table, index), values)
        ids = tf.where(found, tf.gather(tf.constant(sorted_ids, tf.int32), index), -1)
        ragged = code_points.with_flat_values(ids)  # [B, None], -1 marks unknown
        return tf.ragged.boolean_mask(ragged, ragged >= 0)

    def _lookup_arrays(self) -> tuple[list[int], list[int]]:
        pairs = sorted((ord(c), i) for c, i in self._ids.items())
        return [p for p, _ in pairs], [i for _, i in pairs]

    def decode_tf(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """Decodes padded id batches to strings in-graph.

        Positions at or beyond each length, blanks, padding (-1) and ids above V
        become empty strings before joining.

        Args:
            ids: ``[B, L]`` integer ids.
            lengths: ``[B]`` valid lengths.

        Returns:
            ``[B]`` tf.string.
        """
        import tensorflow as tf

        ids = tf.cast(ids, tf.int32)
        valid = tf.sequence_mask(lengths, tf.shape(ids)[1])  # [B, L]
        valid &= (ids > BLANK_ID) & (ids < self.num_classes)
        lookup = tf.constant(["", *self.characters])  # index 0 maps blank to ""
        pieces = tf.gather(lookup, tf.where(valid, ids, 0))  # [B, L] tf.string
        return tf.strings.reduce_join(pieces, axis=1)  # [B]

    # ----- persistence --------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as JSON-ready values."""
        return {
            "characters": list(self.characters),
            "normalizer": self.normalizer.get_config() if self.normalizer else None,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Vocabulary:
        """Builds a vocabulary from `get_config` output."""
        normalizer = config.get("normalizer")
        return cls(
            config["characters"], TextNormalizer.from_config(normalizer) if normalizer else None
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the vocabulary as JSON (atomically)."""
        document = {
            "format": "stenograph.vocabulary",
            "version": _FORMAT_VERSION,
            "tokens": self.tokens,
        }
        document.update(self.get_config())
        atomic_write_text(path, json.dumps(document, ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Reads a vocabulary written by `save`.

        Raises:
            TextError: Naming the file if it is missing, not JSON, or not a vocabulary.
        """
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise TextError(f"cannot read vocabulary file {str(path)!r}: {e}") from None
        if not isinstance(document, dict) or document.get("format") != "stenograph.vocabulary":
            raise TextError(f"{str(path)!r} is not a stenograph vocabulary file (no format marker)")
        try:
            return cls.from_config({k: document[k] for k in ("characters", "normalizer")})
        except (KeyError, TypeError, ValueError) as e:
            raise TextError(f"invalid vocabulary file {str(path)!r}: {e}") from None
