"""placeholder."""

from .ctc import (
    CTCHead,
    ctc_beam_search_decode,
    ctc_feasible,
    ctc_greedy_decode,
    ctc_loss,
    ctc_min_frames,
    ctc_required_frames,
)

__all__ = [
    "CTCHead",
    "ctc_beam_search_decode",
    "ctc_feasible",
    "ctc_greedy_decode",
    "ctc_loss",
    "ctc_min_frames",
    "ctc_required_frames",
]
