"""Dynamic batching: model calls from concurrent requests and streams share one forward pass.

Callers (request threads, stream sessions) submit 1-D waveforms; one worker thread
takes the first waiting waveform, waits at most `max_wait` seconds for more (up to
`max_batch`), groups them by length so padding stays small, and runs the acoustic
model once per group. Each caller blocks on its own future, so the code that calls
the model (`transcribe.transcribe_sources`, the re-decoding stream) stays synchronous
and unchanged: `BatchedAcousticModel` is an `AcousticModel` whose `log_probs` goes
through the batcher. The queue is bounded: a submit that would overflow it raises
`QueueFullError` (the server answers 503) instead of letting memory grow.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

#: A group's padded samples may exceed its real samples by at most this factor.
PADDING_LIMIT = 1.5


class QueueFullError(RuntimeError):
    """The batcher's queue holds `max_pending` waveforms already."""


@dataclass
class _Item:
    samples: np.ndarray  # [S] float32
    future: Future


def length_groups(lengths: Sequence[int], limit: float = PADDING_LIMIT) -> list[list[int]]:
    """Splits item indices into groups whose padded size stays within `limit` of the real size.

    Items are taken shortest first; a group closes when adding the next (longer) item
    would make `len(group) * longest > limit * sum(lengths in group)`.

    Args:
        lengths: Samples per item.
        limit: Allowed ratio of padded to real samples (>= 1).

    Returns:
        Groups of indices into `lengths`, each sorted by length; every index once.
    """
    groups: list[list[int]] = []
    group: list[int] = []
    total = 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        length = max(1, int(lengths[index]))
        if group and (len(group) + 1) * length > limit * (total + length):
            groups.append(group)
            group, total = [], 0
        group.append(index)
        total += length
    if group:
        groups.append(group)
    return groups


class DynamicBatcher:
    """Runs `model_fn` on batches of waveforms gathered from concurrent callers.

    Args:
        model_fn: float32 `[B, S]` waveforms and int32 `[B]` lengths to
            `([B, T, C] log-probabilities, [B] frame counts)`.
        max_batch: Most waveforms per model call.
        max_wait: Seconds the worker waits for more waveforms after the first arrives.
        max_pending: Most waveforms waiting (not yet running); more raise `QueueFullError`.
        on_batch: Called with `(batch size, seconds)` after each model call (metrics).
    """

    def __init__(
        self,
        model_fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
        max_batch: int = 16,
        max_wait: float = 0.01,
        max_pending: int = 256,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_pending < 1 or max_wait < 0:
            raise ValueError(
                "Need max_batch >= 1, max_pending >= 1 and max_wait >= 0. Received: "
                f"max_batch={max_batch}, max_pending={max_pending}, max_wait={max_wait}"
            )
        self.model_fn = model_fn
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_pending = max_pending
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="stenograph-batcher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Waveforms waiting for a model call."""
        return len(self._queue)

    def submit(self, waveforms: Sequence[np.ndarray]) -> list[Future]:
        """Queues waveforms; each future resolves to that waveform's `[T, C]` log-probabilities.

        Raises:
            QueueFullError: If the queue cannot take all of them (none is queued then).
            RuntimeError: If the batcher was closed.
        """
        items = [_Item(np.asarray(w, np.float32).reshape(-1), Future()) for w in waveforms]
        with self._condition:
            if self._closed:
                raise RuntimeError("The batcher is closed; the server is shutting down.")
            if len(self._queue) + len(items) > self.max_pending:
                raise QueueFullError(
                    f"the model queue is full ({len(self._queue)} of {self.max_pending} "
                    "waiting); retry shortly"
                )
            self._queue.extend(items)
            self._condition.notify()
        return [item.future for item in items]

    def run(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Submits waveforms and waits for their log-probabilities (blocking)."""
        return [future.result() for future in self.submit(waveforms)]

    def close(self) -> None:
        """Stops the worker after the queued work; later submits raise."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            for group in length_groups([len(item.samples) for item in batch]):
                self._call_model([batch[i] for i in group])

    def _take_batch(self) -> list[_Item]:
        """Waits for a first item, then up to `max_wait` for more; [] once closed and empty."""
        with self._condition:
            while not self._queue and not self._closed:
                self._condition.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.max_wait
            while len(self._queue) < self.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            count = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _call_model(self, items: list[_Item]) -> None:
        lengths = np.array([len(item.samples) for item in items], np.int32)  # [B]
        waveforms = np.zeros((len(items), max(1, int(lengths.max()))), np.float32)  # [B, S]
        for row, item in enumerate(items):
            waveforms[row, : len(item.samples)] = item.samples
        started = time.perf_counter()
        try:
            log_probs, frame_lengths = self.model_fn(waveforms, lengths)  # [B, T, C], [B]
        except Exception as error:  # noqa: BLE001 - every caller of this batch learns of it
            for item in items:
                item.future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - started)
        for row, item in enumerate(items):
            item.future.set_result(np.asarray(log_probs[row, : int(frame_lengths[row])]))


class BatchedAcousticModel:
    """An `AcousticModel` (see `recipes.transcribe`) whose calls go through a `DynamicBatcher`.

    Args:
        model: The loaded acoustic model (sample rate, frame duration, vocabulary).
        batcher: The batcher that runs `model.log_probs`.
    """

    def __init__(self, model: Any, batcher: DynamicBatcher) -> None:
        self.model = model
        self.batcher = batcher
        self.sample_rate: int = model.sample_rate
        self.seconds_per_frame: float = model.seconds_per_frame
        self.vocabulary = model.vocabulary

    def log_probs(
        self, waveforms: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps float32 `[B, S]` waveforms and int32 `[B]` lengths to `([B, T, C], [B])`."""
        rows = [waveforms[b, : int(lengths[b])] for b in range(len(lengths))]
        results = self.batcher.run(rows)  # B arrays of [T_b, C]
        frame_lengths = np.array([len(r) for r in results], np.int32)  # [B]
        classes = results[0].shape[-1] if results else 1
        padded = np.zeros((len(results), max(1, frame_lengths.max(initial=0)), classes), np.float32)
        for row, result in enumerate(results):
            padded[row, : len(result)] = result  # [B, T, C]
        return padded, frame_lengths

    def log_probs_one(self, samples: np.ndarray) -> np.ndarray:
        """`[T, C]` log-probabilities of one float32 `[S]` waveform."""
        return self.batcher.run([samples])[0]
