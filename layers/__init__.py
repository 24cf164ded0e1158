"""Keras 3 layers for CTC speech recognition: our LSTM, a bidirectional stack, CTC.

- ``LSTM`` / ``LSTMCell``: the ``keras.layers.LSTM`` weight layout, arguments and
  masking, with fast TensorFlow kernels of our own (``lstm_kernels``) or cuDNN's on a
  GPU (``use_cudnn``; ``CudnnLSTM`` defaults it to True); ``return_state``,
  ``initial_state`` and ``stateful=True`` carry the state across chunks of a stream.
- ``BiLSTMStack``: N bidirectional layers whose backward direction starts at each
  sequence's real end (``sequence_lengths``).
- ``CTCHead``, ``ctc_loss``, ``ctc_greedy_decode``, ``ctc_beam_search_decode`` and the
  feasibility helpers ``ctc_min_frames``, ``ctc_required_frames``, ``ctc_feasible``.

Example::

    inputs = keras.Input((None, 80))  # [B, T, features]
    hidden = BiLSTMStack(192, num_layers=2)(inputs)  # [B, T, 384]
    logits = CTCHead(num_classes=29)(hidden)  # [B, T, C], blank = 0
    model = keras.Model(inputs, logits)
    loss = ctc_loss(labels, model(x), label_lengths, logit_lengths)  # [B]
"""

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
