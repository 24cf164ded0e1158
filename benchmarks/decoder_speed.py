"""Decoder speed: greedy vs prefix beam search vs KenLM-fused beam search, in × real time.

    python benchmarks/decoder_speed.py                      # 50 frames/s, beams 16/64/128
    python benchmarks/decoder_speed.py --frames-per-second 33.3 --utterances 60

Logits are synthetic but shaped like a character CTC model's: sentences from an
English text corpus (the licence texts Debian ships in /usr/share/common-licenses)
spelled frame by frame at ~15 characters per second of audio, peaked on the
right character, with Gaussian noise, blank-dominated frames between characters
and a share of frames where a wrong letter competes. The LM is a 4-gram built
with `stenograph lm build` machinery from the other sentences of that corpus.

Ours is `recipes.decoding` on its default backend (ctc-beam-decoder). When
pyctcdecode (+ the kenlm module) is importable it is the reference: each
configuration runs ours and the reference alternately on the same logits
(so machine load hits both), and the table shows both speeds, the ratio and
how many results agree exactly (transcript and every word's frames).
Install the reference into a scratch environment with
``pip install --no-deps pyctcdecode==0.5.0 pygtrie kenlm`` (its numpy<2 pin is
why it is not a stenograph dependency).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np

from stenograph.recipes.decoding import make_decoder
from stenograph.recipes.lm import build_lm, install_kenlm_tools

TOKENS = ["<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]
CHARS_PER_SECOND = 15.0
LICENCES = Path("/usr/share/common-licenses")


def corpus_sentences() -> list[str]:
    """Lower-cased sentences of 4-30 words over the vocabulary's characters."""
    text = " ".join(
        path.read_text(encoding="utf-8", errors="ignore")
        for path in sorted(LICENCES.glob("*"))
        if path.is_file() and not path.is_symlink()
    )
    sentences = []
    for raw in re.split(r"[.;:!?]\s", text):
        words = re.sub(r"[^a-z' ]+", " ", raw.lower()).split()
        if 4 <= len(words) <= 30:
            sentences.append(" ".join(words))
    if len(sentences) < 200:
        sys.exit(f"decoder_speed: need an English text corpus; found {len(sentences)} sentences")
    return sentences


def synthetic_log_probs(
    sentence: str, rng: np.random.Generator, frames_per_second: float
) -> np.ndarray:
    """``[T, C]`` log-probabilities spelling ``sentence`` at ~15 characters/s."""
    frames_per_char = frames_per_second / CHARS_PER_SECOND
    path: list[int] = []
    for char in sentence:
        span = max(1, int(round(rng.normal(frames_per_char, frames_per_char / 3))))
        emit = max(1, int(round(span * rng.uniform(0.3, 0.6))))
        path += [TOKENS.index(char)] * emit + [0] * (span - emit)
        if path[-1] != 0:
            path.append(0)  # a blank between equal neighbours (and it is typical anyway)
    logits = rng.normal(0.0, 1.0, size=(len(path), len(TOKENS))).astype(np.float32)
    for frame, token in enumerate(path):
        logits[frame, token] += rng.uniform(4.0, 9.0)
        if token > 2 and rng.random() < 0.2:  # a competing wrong letter
            logits[frame, int(rng.integers(3, len(TOKENS)))] += rng.uniform(3.0, 8.0)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # [T, C]


def pad(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in arrays])
    batch = np.zeros((len(arrays), lengths.max(), len(TOKENS)), np.float32)  # [B, T, C]
    for row, array in enumerate(arrays):
        batch[row, : len(array)] = array
    return batch, lengths


def timed(decoder, batch, lengths) -> tuple[float, list]:
    start = time.perf_counter()
    results = decoder.decode_batch(batch, lengths)
    return time.perf_counter() - start, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames-per-second", type=float, default=50.0)
    parser.add_argument("--utterances", type=int, default=30)
    parser.add_argument("--beam-widths", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs per config")
    parser.add_argument("--order", type=int, default=4)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    sentences = corpus_sentences()
    order = rng.permutation(len(sentences))
    test = [sentences[i] for i in order[: args.utterances]]
    held_out = set(test)  # licence texts repeat themselves: keep test sentences out of the LM
    train = [sentences[i] for i in order[args.utterances :] if sentences[i] not in held_out]
    batch, lengths = pad([synthetic_log_probs(s, rng, args.frames_per_second) for s in test])
    audio_seconds = lengths.sum() / args.frames_per_second

    with tempfile.TemporaryDirectory() as folder:
        lm = build_lm(train, folder, order=args.order, tools=install_kenlm_tools())
        print(
            f"{len(test)} utterances, {audio_seconds:.0f} s of audio at "
            f"{args.frames_per_second:g} frames/s; LM: {lm.order}-gram from "
            f"{lm.num_sentences} sentences, {lm.unigrams.read_text().count(chr(10))} words"
        )
        have_reference = all(importlib.util.find_spec(m) for m in ("pyctcdecode", "kenlm"))
        if not have_reference:
            print("reference (pyctcdecode + kenlm) not importable: ours only")
        configs = [("greedy", 0)] + [
            (kind, width) for kind in ("beam", "lm") for width in args.beam_widths
        ]
        header = f"{'decoder':<8}{'beam':>5}{'WER':>7}{'ours ×RT':>11}"
        if have_reference:
            header += f"{'pyctcdecode ×RT':>17}{'ratio':>8}{'same words+times':>18}"
        print(header)
        for kind, width in configs:
            print(row(kind, width, lm.binary, batch, lengths, audio_seconds, args.repeats,
                      have_reference, test))  # fmt: skip
    return 0


def row(kind, width, lm_path, batch, lengths, audio_seconds, repeats, have_reference,
        references) -> str:  # fmt: skip
    options = {} if kind == "greedy" else {"beam_width": width}
    if kind == "lm":
        options["lm_path"] = lm_path
    ours = make_decoder(kind, TOKENS, **options)
    reference = None
    if have_reference and kind != "greedy":
        reference = make_decoder(kind, TOKENS, backend="pyctcdecode", **options)
    ours_times, reference_times = [], []
    for _ in range(repeats):  # alternate so contention hits both alike
        seconds, ours_results = timed(ours, batch, lengths)
        ours_times.append(seconds)
        if reference is not None:
            seconds, reference_results = timed(reference, batch, lengths)
            reference_times.append(seconds)
    ours_rt = audio_seconds / statistics.median(ours_times)
    wer = jiwer.wer(references, [r.text for r in ours_results])
    line = f"{kind:<8}{width or '-':>5}{wer:>7.1%}{ours_rt:>10.0f}×"
    if reference is None:
        return line + ("" if not have_reference else f"{'-':>17}{'-':>8}{'-':>18}")
    reference_rt = audio_seconds / statistics.median(reference_times)
    # Same transcript and the same (word, start, end) for every word.
    same = sum(a == b for a, b in zip(ours_results, reference_results, strict=True))
    return (
        line
        + f"{reference_rt:>16.0f}×{ours_rt / reference_rt:>7.1f}×{same:>13}/{len(ours_results)}"
    )


if __name__ == "__main__":
    sys.exit(main())
