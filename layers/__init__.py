"""placeholder."""

from .bidirectional import BiLSTMStack
from .ctc import (
    CTCHead,
    ctc_beam_search_decode,
    ctc_feasible,
    ctc_greedy_decode,
    ctc_loss,
    ctc_min_frames,
    ctc_required_frames,
)
from .cudnn_lstm import cudnn_supported
from .lstm import LSTM, CudnnLSTM, LSTMCell

__all__ = [
    "BiLSTMStack",
    "CTCHead",
    "CudnnLSTM",
    "LSTM",
    "LSTMCell",
    "cudnn_supported",
    "ctc_beam_search_decode",
    "ctc_feasible",
    "ctc_greedy_decode",
    "ctc_loss",
    "ctc_min_frames",
    "ctc_required_frames",
]
