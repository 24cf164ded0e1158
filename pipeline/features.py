"""In-graph acoustic features (log-mel filterbank, MFCC) and feature normalisation.

Everything here is TensorFlow graph code, so the same layers run inside tf.data and
inside an exported model that takes raw audio.

Framing convention: with ``center=True`` (the default, and what the models use) frame
``t`` is centred on sample ``t * frame_step``; the waveform is zero padded by
``frame_length // 2`` on both sides, exactly as ``librosa.stft(center=True,
pad_mode="constant")`` does, so ``num_frames = 1 + num_samples // frame_step``. With
``center=False`` frames start at ``t * frame_step`` (Kaldi style, no look-ahead
padding) and ``num_frames = 1 + (num_samples - frame_length) // frame_step``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Literal, overload

import keras
import numpy as np
import tensorflow as tf

from .errors import reject_unknown_keys

FeatureKind = Literal["logmel", "mfcc"]
MelScale = Literal["slaney", "htk"]

_KINDS = ("logmel", "mfcc")
_MEL_SCALES = ("slaney", "htk")
_MEL_NORMS = ("slaney", None)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How waveforms become features.

    Attributes:
        sample_rate: Expected waveform sample rate in Hz.
        frame_length: Analysis window length in samples (Hann window).
        frame_step: Hop between frames in samples.
        fft_length: FFT size (>= frame_length); the window is zero padded to it.
        num_mel_bins: Number of mel filters.
        fmin: Lowest filter edge in Hz.
        fmax: Highest filter edge in Hz; ``None`` means ``sample_rate / 2``.
        preemphasis: Pre-emphasis coefficient ``c`` in ``y[n] = x[n] - c x[n-1]``;
            0 disables it.
        dither: Standard deviation of Gaussian noise added to the waveform in
            training only (Kaldi style, on the [-1, 1] scale); 0 disables it.
        log_floor: Power floor before the logarithm: ``log(max(mel, log_floor))``.
        kind: ``"logmel"`` (natural log of mel power) or ``"mfcc"`` (DCT-II, ortho, of
            the mel power in dB, as ``librosa.feature.mfcc``).
        num_mfcc: Number of cepstral coefficients when ``kind="mfcc"``.
        mel_scale: ``"slaney"`` (librosa's default) or ``"htk"``.
        mel_norm: ``"slaney"`` (area normalised filters, librosa's default) or ``None``.
        center: Centre frames on ``t * frame_step`` with zero padding (librosa's
            default); see the module docstring.
    """

    sample_rate: int = 16000
    frame_length: int = 400
    frame_step: int = 160
    fft_length: int = 512
    num_mel_bins: int = 80
    fmin: float = 20.0
    fmax: float | None = None
    preemphasis: float = 0.97
    dither: float = 0.0
    log_floor: float = 1e-6
    kind: FeatureKind = "logmel"
    num_mfcc: int = 13
    mel_scale: MelScale = "slaney"
    mel_norm: str | None = "slaney"
    center: bool = True

    def __post_init__(self) -> None:
        _validate_config(self)

    @property
    def num_features(self) -> int:
        """Size of the last feature axis."""
        return self.num_mfcc if self.kind == "mfcc" else self.num_mel_bins

    @property
    def upper_frequency(self) -> float:
        """The effective ``fmax`` in Hz."""
        return float(self.fmax) if self.fmax is not None else self.sample_rate / 2.0

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureConfig:
        """Builds a config from ``to_dict()`` output; unknown keys are an error."""
        reject_unknown_keys(cls, values)
        return cls(**values)


def _validate_config(config: FeatureConfig) -> None:
    positive = ("sample_rate", "frame_length", "frame_step", "fft_length", "num_mel_bins")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(
                f"FeatureConfig.{name} must be > 0. Received: {name}={getattr(config, name)}"
            )
    if config.fft_length < config.frame_length:
        raise ValueError(
            "FeatureConfig.fft_length must be >= frame_length. Received: "
            f"fft_length={config.fft_length}, frame_length={config.frame_length}"
        )
    if config.kind not in _KINDS:
        raise ValueError(
            f"FeatureConfig.kind must be one of {_KINDS}. Received: kind={config.kind!r}"
        )
    if config.mel_scale not in _MEL_SCALES:
        raise ValueError(
            f"FeatureConfig.mel_scale must be one of {_MEL_SCALES}. Received: "
            f"mel_scale={config.mel_scale!r}"
        )
    if config.mel_norm not in _MEL_NORMS:
        raise ValueError(
            f"FeatureConfig.mel_norm must be one of {_MEL_NORMS}. Received: "
            f"mel_norm={config.mel_norm!r}"
        )
    if not 0.0 <= config.fmin < config.upper_frequency <= config.sample_rate / 2.0:
        raise ValueError(
            "FeatureConfig needs 0 <= fmin < fmax <= sample_rate / 2. Received: "
            f"fmin={config.fmin}, fmax={config.fmax}, sample_rate={config.sample_rate}"
        )
    if config.kind == "mfcc" and not 0 < config.num_mfcc <= config.num_mel_bins:
        raise ValueError(
            "FeatureConfig.num_mfcc must be in [1, num_mel_bins]. Received: "
            f"num_mfcc={config.num_mfcc}, num_mel_bins={config.num_mel_bins}"
        )
    if config.log_floor <= 0.0 or config.dither < 0.0:
        raise ValueError(
            "FeatureConfig needs log_floor > 0 and dither >= 0. Received: "
            f"log_floor={config.log_floor}, dither={config.dither}"
        )


# ---------------------------------------------------------------------------
# Frame counting
# ---------------------------------------------------------------------------


def _center_padding(config: FeatureConfig) -> int:
    return config.frame_length // 2 if config.center else 0


@overload
def num_frames(num_samples: int, config: FeatureConfig) -> int: ...
@overload
def num_frames(num_samples: tf.Tensor, config: FeatureConfig) -> tf.Tensor: ...
def num_frames(num_samples: Any, config: FeatureConfig) -> Any:
    """Number of feature frames for a waveform of ``num_samples`` samples.

    Args:
        num_samples: A Python int, a numpy array, or an integer ``tf.Tensor``.
        config: The feature configuration (framing and centring).

    Returns:
        The same kind as ``num_samples``: a Python int, a numpy int array, or an int32
        tensor. Never negative.
    """
    padded_extra = 2 * _center_padding(config) - config.frame_length
    if isinstance(num_samples, (tf.Tensor, tf.Variable)):
        samples = tf.cast(num_samples, tf.int32)
        frames = 1 + tf.math.floordiv(samples + padded_extra, config.frame_step)
        return tf.maximum(frames, 0)
    if isinstance(num_samples, np.ndarray):
        frames = 1 + (num_samples.astype(np.int64) + padded_extra) // config.frame_step
        return np.maximum(frames, 0)
    return max(0, 1 + (int(num_samples) + padded_extra) // config.frame_step)


# ---------------------------------------------------------------------------
# Constant matrices (built in numpy, float64, then cast once)
# ---------------------------------------------------------------------------


def hz_to_mel(frequencies: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Hertz to mels on the Slaney (Auditory Toolbox) or HTK scale."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + frequencies / 700.0)
    # Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    linear_step = 200.0 / 3.0
    break_hz, break_mel = 1000.0, 1000.0 / linear_step
    log_step = math.log(6.4) / 27.0
    mels = frequencies / linear_step
    above = frequencies >= break_hz
    safe = np.where(above, frequencies, break_hz)
    return np.where(above, break_mel + np.log(safe / break_hz) / log_step, mels)


def mel_to_hz(mels: np.ndarray, scale: str = "slaney") -> np.ndarray:
    """Mels to Hertz; the inverse of :func:`hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    linear_step = 200.0 / 3.0
    break_hz, break_mel = 1000.0, 1000.0 / linear_step
    log_step = math.log(6.4) / 27.0
    above = mels >= break_mel
    return np.where(above, break_hz * np.exp(log_step * (mels - break_mel)), mels * linear_step)


def fft_frequencies(config: FeatureConfig) -> np.ndarray:
    """Centre frequency in Hz of each FFT bin: float64 [fft_length // 2 + 1]."""
    return np.linspace(0.0, config.sample_rate / 2.0, config.fft_length // 2 + 1)


def mel_edges_hz(config: FeatureConfig) -> np.ndarray:
    """Edges of the mel filters in Hz, equally spaced in mels: float64 [M + 2].

    Filter ``m`` rises from edge ``m`` to ``m + 1`` and falls to ``m + 2``.
    """
    edges_mel = np.linspace(
        hz_to_mel(config.fmin, config.mel_scale),
        hz_to_mel(config.upper_frequency, config.mel_scale),
        config.num_mel_bins + 2,
    )
    return mel_to_hz(edges_mel, config.mel_scale)


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """Triangular mel filterbank, numerically the same as ``librosa.filters.mel``.

    Args:
        config: Gives sample rate, FFT size, number of filters, fmin/fmax, scale, norm.

    Returns:
        float64 array [fft_length // 2 + 1, num_mel_bins] (spectrum @ matrix = mel).
    """
    edges_hz = mel_edges_hz(config)  # [M + 2]
    widths = np.diff(edges_hz)  # [M + 1]
    offsets = edges_hz[:, None] - fft_frequencies(config)[None, :]  # [M + 2, K]
    rising = -offsets[:-2] / widths[:-1, None]  # [M, K]
    falling = offsets[2:] / widths[1:, None]  # [M, K]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [M, K]
    if config.mel_norm == "slaney":
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T  # [K, M]


VTLP_BOUNDARY_HZ = 4800.0


def vtlp_warp(frequencies: tf.Tensor, alphas: tf.Tensor, nyquist: float) -> tf.Tensor:
    """Vocal tract length perturbation: where each frequency moves, per utterance.

    The forward warp of Jaitly & Hinton (2013): frequencies scale by ``alpha`` up
    to a bend, then run linearly so that the Nyquist frequency stays put (the
    generator's ``effects.vtlp_source_frequencies`` is its inverse).

    Args:
        frequencies: float32 [K] in Hz, within ``[0, nyquist]``.
        alphas: float32 [B] warp factors; > 1 raises formants (a shorter vocal tract).
        nyquist: Half the sample rate in Hz.

    Returns:
        float32 [B, K] warped frequencies in Hz.
    """
    alphas = tf.cast(alphas, tf.float32)[:, None]  # [B, 1]
    frequencies = tf.cast(frequencies, tf.float32)[None, :]  # [1, K]
    bend = VTLP_BOUNDARY_HZ * tf.minimum(alphas, 1.0) / alphas  # [B, 1]
    top_slope = (nyquist - alphas * bend) / (nyquist - bend)  # [B, 1]
    upper = nyquist - top_slope * (nyquist - frequencies)  # [B, K]
    return tf.where(frequencies <= bend, frequencies * alphas, upper)


def warped_mel_filterbanks(config: FeatureConfig, alphas: tf.Tensor) -> tf.Tensor:
    """One mel filterbank per utterance, read on VTLP-warped FFT frequencies.

    The energy at FFT frequency ``f`` is pooled as if it were at ``vtlp_warp(f)``,
    which moves the formants by ``alpha`` and leaves the filters themselves as in
    :func:`mel_filterbank` (``alpha = 1`` gives that matrix exactly, up to float32).

    Args:
        config: The feature configuration.
        alphas: float32 [B] warp factors.

    Returns:
        float32 [B, fft_length // 2 + 1, num_mel_bins].
    """
    frequencies = tf.constant(fft_frequencies(config), tf.float32)  # [K]
    warped = vtlp_warp(frequencies, alphas, config.sample_rate / 2.0)  # [B, K]
    edges = tf.constant(mel_edges_hz(config), tf.float32)  # [M + 2]
    widths = edges[1:] - edges[:-1]  # [M + 1]
    offsets = edges[None, :, None] - warped[:, None, :]  # [B, M + 2, K]
    rising = -offsets[:, :-2] / widths[:-1, None]  # [B, M, K]
    falling = offsets[:, 2:] / widths[1:, None]  # [B, M, K]
    weights = tf.maximum(0.0, tf.minimum(rising, falling))  # [B, M, K]
    if config.mel_norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return tf.transpose(weights, [0, 2, 1])  # [B, K, M]


def dct_matrix(num_inputs: int, num_outputs: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix (scipy ``dct(type=2, norm="ortho")``).

    Returns:
        float64 array [num_inputs, num_outputs] so that ``x @ matrix`` is the DCT.
    """
    n = np.arange(num_inputs)[:, None]
    k = np.arange(num_outputs)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2.0 * num_inputs))  # [N, K]
    scale = np.full(num_outputs, math.sqrt(2.0 / num_inputs))
    scale[0] = math.sqrt(1.0 / num_inputs)
    return matrix * scale[None, :]


# ---------------------------------------------------------------------------
# The feature computation as pure functions
# ---------------------------------------------------------------------------


def sequence_mask(
    lengths: tf.Tensor, max_length: tf.Tensor, dtype: tf.DType = tf.float32
) -> tf.Tensor:
    """Right-padded mask [B, max_length] from lengths [B]."""
    return tf.sequence_mask(lengths, max_length, dtype=dtype)


def apply_preemphasis(waveforms: tf.Tensor, coefficient: float) -> tf.Tensor:
    """``y[n] = x[n] - c x[n-1]`` along the last axis, with ``x[-1] = 0``."""
    if coefficient == 0.0:
        return waveforms
    previous = tf.pad(waveforms[:, :-1], [[0, 0], [1, 0]])  # [B, S]
    return waveforms - coefficient * previous


def _default_lengths(waveforms: tf.Tensor, lengths: tf.Tensor | None) -> tf.Tensor:
    batch, samples = tf.shape(waveforms)[0], tf.shape(waveforms)[1]
    if lengths is None:
        return tf.fill([batch], samples)
    return tf.cast(lengths, tf.int32)


def power_spectrogram(waveforms: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Power STFT [B, T, fft_length // 2 + 1] of already masked waveforms [B, S]."""
    padding = _center_padding(config)
    # A batch shorter than one window still yields one (all-masked) frame, not an error.
    short_by = tf.maximum(config.frame_length - tf.shape(waveforms)[1] - 2 * padding, 0)
    waveforms = tf.pad(waveforms, [[0, 0], [padding, padding + short_by]])  # [B, S + 2p (+ fill)]
    stft = tf.signal.stft(
        waveforms,
        frame_length=config.frame_length,
        frame_step=config.frame_step,
        fft_length=config.fft_length,
        window_fn=tf.signal.hann_window,  # periodic, as scipy/librosa "hann"
        pad_end=False,
    )  # [B, T, K] complex64
    return tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))


def compute_features(
    waveforms: tf.Tensor,
    lengths: tf.Tensor | None,
    config: FeatureConfig,
    dither_seed: tf.Tensor | None = None,
    warp_factors: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Waveforms to log-mel or MFCC features; the pure function behind AudioFeatures.

    Args:
        waveforms: float32 [B, S], right padded.
        lengths: int [B] valid samples per row, or ``None`` for all ``S``.
        config: The feature configuration.
        dither_seed: int32 [2] stateless seed; when given and ``config.dither > 0``,
            Gaussian dither is added to the valid samples.
        warp_factors: float32 [B] VTLP factors (training augmentation, see
            :func:`warped_mel_filterbanks`), or ``None`` for the plain filterbank.

    Returns:
        ``(features [B, T, F] float32, frame_lengths [B] int32)``; frames at or beyond
        ``frame_lengths`` are exactly zero.
    """
    waveforms = tf.convert_to_tensor(waveforms, tf.float32)
    lengths = _default_lengths(waveforms, lengths)
    sample_mask = sequence_mask(lengths, tf.shape(waveforms)[1])  # [B, S]
    if dither_seed is not None and config.dither > 0.0:
        noise = tf.random.stateless_normal(tf.shape(waveforms), seed=dither_seed)
        waveforms = waveforms + config.dither * noise
    # Masking after pre-emphasis keeps the sample just past the end at zero, so a
    # padded row gives exactly the features of the same utterance on its own.
    waveforms = apply_preemphasis(waveforms * sample_mask, config.preemphasis) * sample_mask
    power = power_spectrogram(waveforms, config)  # [B, T, K]
    if warp_factors is None:
        filterbank = tf.constant(mel_filterbank(config), dtype=tf.float32)  # [K, M]
        mel = tf.tensordot(power, filterbank, axes=1)  # [B, T, M]
    else:
        mel = tf.matmul(power, warped_mel_filterbanks(config, warp_factors))  # [B, T, M]
    floored = tf.maximum(mel, config.log_floor)
    if config.kind == "mfcc":
        decibels = (10.0 / math.log(10.0)) * tf.math.log(floored)  # [B, T, M]
        dct = tf.constant(dct_matrix(config.num_mel_bins, config.num_mfcc), tf.float32)
        features = tf.tensordot(decibels, dct, axes=1)  # [B, T, num_mfcc]
    else:
        features = tf.math.log(floored)  # [B, T, M]
    frame_lengths = num_frames(lengths, config)
    frame_mask = sequence_mask(frame_lengths, tf.shape(features)[1])  # [B, T]
    return features * frame_mask[:, :, None], frame_lengths


# ---------------------------------------------------------------------------
# Keras layers
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="stenograph")
class AudioFeatures(keras.layers.Layer):
    """Raw audio to log-mel (or MFCC) features, in graph, as a Keras layer.

    ``call(waveforms [B, S] float32, lengths [B] int) -> (features [B, T, F] float32,
    frame_lengths [B] int32)``. Dither (if configured) is applied only with
    ``training=True`` and is seeded.

    Args:
        config: A ``FeatureConfig`` or its ``to_dict()`` form.
        seed: Seed for the dither noise.
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(
        self,
        config: FeatureConfig | dict[str, Any] | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")  # spectra in bfloat16 lose the log-mel floor
        super().__init__(**kwargs)
        if config is None:
            config = FeatureConfig()
        elif isinstance(config, dict):
            config = FeatureConfig.from_dict(config)
        self.config = config
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if config.dither > 0 else None

    def call(
        self, waveforms: tf.Tensor, lengths: tf.Tensor | None = None, training: bool | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Computes features and frame lengths; see the class docstring."""
        dither_seed = None
        if training and self.seed_generator is not None:
            dither_seed = tf.cast(self.seed_generator.next(), tf.int32)
        return compute_features(waveforms, lengths, self.config, dither_seed)

    def compute_output_shape(self, waveforms_shape: Any, lengths_shape: Any = None) -> Any:
        """Static output shapes: ``([B, T, F], [B])``."""
        batch, samples = waveforms_shape[0], waveforms_shape[1]
        frames = None if samples is None else num_frames(int(samples), self.config)
        return (batch, frames, self.config.num_features), (batch,)

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument."""
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}


def _masked_moments(
    features: tf.Tensor, frame_lengths: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    mask = sequence_mask(frame_lengths, tf.shape(features)[1])[:, :, None]  # [B, T, 1]
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)  # [B, 1, 1]
    mean = tf.reduce_sum(features * mask, axis=1, keepdims=True) / count  # [B, 1, F]
    variance = tf.reduce_sum(tf.square(features - mean) * mask, axis=1, keepdims=True) / count
    return mean, variance, mask


#: `FeatureNormalizer` modes: per utterance, corpus statistics, or corpus statistics
#: and the utterance's mean so far (causal).
NORMALIZATION_MODES = ("utterance", "global", "running")


@keras.saving.register_keras_serializable(package="stenograph")
class FeatureNormalizer(keras.layers.Layer):
    """Mean/variance normalisation of features, padded frames kept at zero.

    ``mode="utterance"`` uses each utterance's own statistics over its valid frames.
    ``mode="global"`` uses corpus statistics stored as non-trainable weights (so they
    are saved with, and exported with, the model); set them with ``mean``/``std`` at
    construction or :meth:`set_statistics` (see :func:`compute_global_stats`).
    ``mode="running"`` normalises with the corpus statistics, then subtracts the
    utterance's mean *so far* (:meth:`running`): frame ``t`` reads frames ``0..t``
    only, so it streams, yet like ``"utterance"`` it removes a voice's or channel's
    constant offset once heard. The corpus mean counts as ``prior_frames`` frames, so
    the first frames are not normalised by themselves alone.

    Args:
        mode: ``"utterance"``, ``"global"`` or ``"running"``.
        num_features: Feature size; inferred at build time if omitted.
        mean: Initial corpus mean [F] (``mode="global"`` or ``"running"``).
        std: Initial corpus standard deviation [F] (``mode="global"`` or ``"running"``).
        epsilon: Added to the standard deviation before dividing.
        prior_frames: Weight of the corpus mean in the running mean, in frames
            (``mode="running"``).
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(
        self,
        mode: str = "utterance",
        num_features: int | None = None,
        mean: Iterable[float] | None = None,
        std: Iterable[float] | None = None,
        epsilon: float = 1e-5,
        prior_frames: float = 100.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(
                f"FeatureNormalizer mode must be one of {NORMALIZATION_MODES}. "
                f"Received: mode={mode!r}"
            )
        if prior_frames <= 0:
            raise ValueError(f"prior_frames must be > 0. Received: prior_frames={prior_frames}")
        self.mode = mode
        self.prior_frames = float(prior_frames)
        self.num_features = num_features
        self.initial_mean = None if mean is None else [float(v) for v in np.asarray(mean).ravel()]
        self.initial_std = None if std is None else [float(v) for v in np.asarray(std).ravel()]
        self.epsilon = epsilon
        if self.initial_mean is not None and self.num_features is None:
            self.num_features = len(self.initial_mean)

    def build(self, features_shape: Any, frame_lengths_shape: Any = None) -> None:
        """Creates the corpus statistics weights (``mode="global"`` or ``"running"``)."""
        size = self.num_features or features_shape[-1]
        if size is None:
            raise ValueError(
                "FeatureNormalizer needs a known feature size. Received: "
                f"features_shape={features_shape}, num_features={self.num_features}"
            )
        self.num_features = int(size)
        if self.mode != "utterance":
            mean = self.initial_mean or [0.0] * self.num_features
            std = self.initial_std or [1.0] * self.num_features
            self.mean = self.add_weight(
                name="mean",
                shape=(self.num_features,),
                trainable=False,
                initializer=keras.initializers.Constant(np.asarray(mean, np.float32)),
            )
            self.std = self.add_weight(
                name="std",
                shape=(self.num_features,),
                trainable=False,
                initializer=keras.initializers.Constant(np.asarray(std, np.float32)),
            )
        self.built = True

    def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Stores global statistics [F] in the layer's weights."""
        if self.mode == "utterance":
            raise ValueError(
                f"set_statistics needs mode='global' or 'running'. Received: mode={self.mode!r}"
            )
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if not self.built:
            self.num_features = self.num_features or mean.shape[-1]
            self.build((None, None, self.num_features))
        if mean.shape != (self.num_features,) or std.shape != (self.num_features,):
            raise ValueError(
                f"Statistics must have shape ({self.num_features},). Received: "
                f"mean.shape={mean.shape}, std.shape={std.shape}"
            )
        self.mean.assign(mean)
        self.std.assign(std)

    def call(self, features: tf.Tensor, frame_lengths: tf.Tensor | None = None) -> tf.Tensor:
        """Normalises features [B, T, F]; frames at/after ``frame_lengths`` stay zero."""
        features = tf.cast(features, tf.float32)
        if frame_lengths is None:
            frame_lengths = tf.fill([tf.shape(features)[0]], tf.shape(features)[1])
        if self.mode == "utterance":
            mean, variance, mask = _masked_moments(features, frame_lengths)
            return (features - mean) / (tf.sqrt(variance) + self.epsilon) * mask
        if self.mode == "running":
            batch = tf.shape(features)[0]
            no_sum, no_count = tf.zeros([batch, self.num_features]), tf.zeros([batch], tf.int32)
            return self.running(features, frame_lengths, no_sum, no_count)[0]
        return self._standardised(features, frame_lengths)

    def _standardised(self, features: tf.Tensor, frame_lengths: tf.Tensor) -> tf.Tensor:
        """Corpus statistics applied to `features[B,T,F]`; padding stays zero."""
        mask = sequence_mask(frame_lengths, tf.shape(features)[1])[:, :, None]  # [B, T, 1]
        mean = tf.cast(self.mean, tf.float32)[None, None, :]  # [1, 1, F]
        std = tf.cast(self.std, tf.float32)[None, None, :]  # [1, 1, F]
        return (features - mean) / (std + self.epsilon) * mask

    def running(
        self,
        features: tf.Tensor,
        frame_lengths: tf.Tensor,
        carried_sum: tf.Tensor,
        carried_count: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``mode="running"`` on frames that continue earlier ones (a stream's chunk).

        With ``z`` the frames under the corpus statistics, frame ``t`` becomes
        ``z[t] - sum(z[..t]) / (prior_frames + count(..t))``, the sums and counts
        including the ``carried_count`` earlier frames, whose ``z`` add up to
        ``carried_sum`` (zeros at the start of an utterance). Working on ``z``
        rather than the raw features keeps the sums small, so a long stream's
        float32 running sum stays exact enough.

        Args:
            features: ``[B, T, F]`` new frames.
            frame_lengths: ``[B]`` valid new frames per row.
            carried_sum: ``[B, F]`` sum of ``z`` over the earlier frames.
            carried_count: ``[B]`` int32, how many earlier frames.

        Returns:
            ``(normalised [B, T, F], new_sum [B, F], new_count [B])``.
        """
        features = tf.cast(features, tf.float32)
        frame_lengths = tf.cast(frame_lengths, tf.int32)
        z = self._standardised(features, frame_lengths)  # [B, T, F], zero on padding
        sums = carried_sum[:, None, :] + tf.cumsum(z, axis=1)  # [B, T, F]
        steps = tf.range(1, tf.shape(z)[1] + 1)[None, :]  # [1, T]
        counts = tf.cast(carried_count[:, None] + steps, tf.float32)  # [B, T]
        mask = sequence_mask(frame_lengths, tf.shape(z)[1])[:, :, None]  # [B, T, 1]
        normalised = (z - sums / (self.prior_frames + counts[:, :, None])) * mask
        new_sum = carried_sum + tf.reduce_sum(z, axis=1)  # [B, F]
        return normalised, new_sum, carried_count + frame_lengths

    def compute_output_shape(self, features_shape: Any, frame_lengths_shape: Any = None) -> Any:
        """Same shape as the features."""
        return features_shape

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument."""
        return {
            **super().get_config(),
            "mode": self.mode,
            "num_features": self.num_features,
            "mean": self.initial_mean,
            "std": self.initial_std,
            "epsilon": self.epsilon,
            "prior_frames": self.prior_frames,
        }


# ---------------------------------------------------------------------------
# Global statistics
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class RunningMoments:
    """Streaming per-feature count/mean/M2 with Chan et al.'s parallel combination.

    Float64 throughout, so a corpus of any size accumulates without catastrophic
    cancellation.
    """

    count: float = 0.0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def update(self, frames: np.ndarray) -> None:
        """Adds a block of frames [N, F]."""
        frames = np.asarray(frames, dtype=np.float64)
        if frames.shape[0] == 0:
            return
        block_count = float(frames.shape[0])
        block_mean = frames.mean(axis=0)
        block_m2 = ((frames - block_mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = block_count, block_mean, block_m2
            return
        total = self.count + block_count
        delta = block_mean - self.mean
        self.mean = self.mean + delta * (block_count / total)
        self.m2 = self.m2 + block_m2 + delta**2 * (self.count * block_count / total)
        self.count = total

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(mean [F], std [F])`` (population std) as float32."""
        if self.mean is None:
            raise ValueError("No frames were accumulated. Received: an empty dataset")
        std = np.sqrt(self.m2 / self.count)
        return self.mean.astype(np.float32), std.astype(np.float32)


def _valid_frames(element: Any) -> Iterable[np.ndarray]:
    """Yields [N, F] blocks of valid frames from one dataset element."""
    if hasattr(element, "features") and hasattr(element, "feature_lengths"):
        features, lengths = element.features, element.feature_lengths
    elif isinstance(element, (tuple, list)) and len(element) >= 2:
        features, lengths = element[0], element[1]
    else:
        features, lengths = element, None
    features = np.asarray(features)
    if features.ndim == 2:  # one utterance [T, F]
        yield features if lengths is None else features[: int(lengths)]
        return
    lengths = (
        np.full(features.shape[0], features.shape[1]) if lengths is None else np.asarray(lengths)
    )
    for row, length in zip(features, lengths, strict=True):
        yield row[: int(length)]


def compute_global_stats(elements: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation over the valid frames of a corpus.

    Args:
        elements: A ``tf.data.Dataset`` or any iterable of ``Batch`` objects,
            ``(features [B, T, F], lengths [B])`` pairs, or single utterances [T, F].
            Only frames before each length count. Streams in one pass; memory does
            not grow with the corpus.

    Returns:
        ``(mean [F], std [F])`` float32, ready for ``FeatureNormalizer.set_statistics``.
    """
    moments = RunningMoments()
    for element in elements:
        for frames in _valid_frames(element):
            moments.update(frames)
    return moments.result()
