"""Training-time augmentation: speed perturbation, additive noise, gain, SpecAugment.

Every function is pure TensorFlow and takes an explicit stateless seed (an int [2]
tensor), so a given seed always gives the same output whatever the tf.data
parallelism, and a different seed gives a different one. The dataset derives one
seed per element from its own seed (see ``dataset.make_dataset``).

Waveform augmentations work on one utterance ``[S]``; SpecAugment works on a padded
batch ``[B, T, F]`` with its frame lengths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from .errors import reject_unknown_keys
from .resample import resample_tf

NOISE_KINDS = ("white", "pink", "babble")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run in training, and how strong they are.

    Attributes:
        speed_range: ``(low, high)`` speed factors drawn uniformly; a factor ``f``
            makes the audio ``f`` times faster (``ceil(S / f)`` samples, pitch moves
            with it, as Kaldi's speed perturbation). ``None`` disables it.
        speed_probability: Chance that an utterance is speed perturbed.
        noise_probability: Chance that noise is added to an utterance.
        snr_range: ``(low, high)`` signal-to-noise ratio in dB, drawn uniformly.
        noise_kinds: Generated noise kinds to draw from when no noise bank is given:
            any of ``"white"``, ``"pink"``, ``"babble"``.
        gain_db_range: ``(low, high)`` gain in dB, drawn uniformly; ``None`` disables.
        freq_masks: Number of SpecAugment frequency masks per utterance.
        freq_mask_width: Largest frequency-mask width in bins (drawn in ``[0, width]``).
        time_masks: Number of SpecAugment time masks per utterance.
        time_mask_width: Largest time-mask width in frames.
        time_mask_ratio: A time mask never exceeds this fraction of the utterance.
        vtlp_range: ``(low, high)`` vocal tract length perturbation factors, one
            drawn uniformly per utterance: the mel filterbank reads warped
            frequencies, so formants move by the factor while pitch and tempo stay
            (Jaitly & Hinton, 2013; ``features.warped_mel_filterbanks``). ``None``
            disables it.
    """

    speed_range: tuple[float, float] | None = (0.9, 1.1)
    speed_probability: float = 1.0
    noise_probability: float = 0.5
    snr_range: tuple[float, float] = (10.0, 30.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    gain_db_range: tuple[float, float] | None = (-6.0, 6.0)
    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 2
    time_mask_width: int = 40
    time_mask_ratio: float = 0.2
    vtlp_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check_range("speed_range", self.speed_range, minimum=0.5)
        _check_range("snr_range", self.snr_range)
        _check_range("gain_db_range", self.gain_db_range)
        _check_range("vtlp_range", self.vtlp_range, minimum=0.5)
        for name in ("speed_probability", "noise_probability", "time_mask_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"AugmentConfig.{name} must be in [0, 1]. Received: {getattr(self, name)}"
                )
        unknown = [kind for kind in self.noise_kinds if kind not in NOISE_KINDS]
        if unknown or not self.noise_kinds:
            raise ValueError(
                f"AugmentConfig.noise_kinds must be a non-empty subset of {NOISE_KINDS}. "
                f"Received: noise_kinds={self.noise_kinds!r}"
            )
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"AugmentConfig.{name} must be >= 0. Received: {getattr(self, name)}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentConfig:
        """Builds a config from ``to_dict()`` output (lists become tuples)."""
        reject_unknown_keys(cls, values)
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})


def _check_range(
    name: str, bounds: tuple[float, float] | None, minimum: float | None = None
) -> None:
    if bounds is None:
        return
    low, high = bounds
    if low > high or (minimum is not None and low < minimum):
        raise ValueError(
            f"AugmentConfig.{name} must be (low, high) with low <= high"
            f"{'' if minimum is None else f' and low >= {minimum}'}. Received: {name}={bounds}"
        )


# ---------------------------------------------------------------------------
# Seeds and draws
# ---------------------------------------------------------------------------


def split_seed(seed: tf.Tensor, num: int) -> tf.Tensor:
    """Splits one stateless seed [2] into ``num`` independent seeds [num, 2]."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)


def _uniform(seed: tf.Tensor, low: float, high: float, shape: Sequence[int] = ()) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def _happens(seed: tf.Tensor, probability: float) -> tf.Tensor:
    return _uniform(seed, 0.0, 1.0) < probability


# ---------------------------------------------------------------------------
# Speed perturbation
# ---------------------------------------------------------------------------


SPEED_RESOLUTION = 100  # speed factors are rounded to multiples of 1 / SPEED_RESOLUTION


def speed_perturb(waveform: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """Plays a waveform ``factor`` times faster by band-limited resampling.

    The factor is rounded to ``p / q`` with ``q = SPEED_RESOLUTION``, and the audio
    is resampled from rate ``p`` to rate ``q`` by `resample.resample_tf` (the
    pipeline's one in-graph resampler): its lowpass sits below the lower of the two
    Nyquist frequencies, so speeding up does not alias.

    Args:
        waveform: float32 [S].
        factor: Scalar speed factor (positive; below ``1 / SPEED_RESOLUTION`` it is
            raised to that).

    Returns:
        float32 [ceil(S / factor)] (with the rounded factor).
    """
    p = tf.round(tf.cast(factor, tf.float64) * SPEED_RESOLUTION)
    p = tf.maximum(tf.cast(p, tf.int64), 1)
    return resample_tf(waveform, p, SPEED_RESOLUTION)


# ---------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------


def _shaped_noise(seed: tf.Tensor, shape: tf.Tensor, gain_fn: Any, sample_rate: int) -> tf.Tensor:
    """White Gaussian noise [..., S] filtered by a real spectral gain ``gain_fn(freqs)``."""
    white = tf.random.stateless_normal(shape, seed=seed)  # [..., S]
    num_samples = shape[-1]
    spectrum = tf.signal.rfft(white)  # [..., S // 2 + 1]
    bins = tf.shape(spectrum)[-1]
    freqs = tf.cast(tf.range(bins), tf.float32) * (sample_rate / tf.cast(num_samples, tf.float32))
    gain = tf.cast(gain_fn(freqs), tf.complex64)  # [S // 2 + 1]
    return tf.signal.irfft(spectrum * gain, fft_length=[num_samples])  # [..., S]


def _pink_gain(freqs: tf.Tensor) -> tf.Tensor:
    # Power falling as 1/f means amplitude 1/sqrt(f); below 20 Hz it is held flat.
    return tf.math.rsqrt(tf.maximum(freqs, 20.0))


def _speech_band_gain(freqs: tf.Tensor) -> tf.Tensor:
    band = tf.cast((freqs >= 100.0) & (freqs <= 4000.0), tf.float32)
    return band * _pink_gain(freqs)


def _syllable_envelope_gain(freqs: tf.Tensor) -> tf.Tensor:
    return tf.cast(freqs <= 8.0, tf.float32)  # syllable-rate amplitude modulation


ENVELOPE_RATE = 100  # Hz; syllable-rate envelopes are drawn at this rate, then interpolated


def _babble(num_samples: tf.Tensor, seed: tf.Tensor, sample_rate: int, voices: int) -> tf.Tensor:
    """Speech-band noise talkers, each amplitude modulated below 8 Hz, summed: [S].

    The talkers are circular shifts of one shaped noise (far apart, so uncorrelated in
    practice) and the envelopes are drawn at ``ENVELOPE_RATE``: one FFT pair per call.
    """
    carrier_seed, envelope_seed, shift_seed = tf.unstack(split_seed(seed, 3))
    carrier = _shaped_noise(carrier_seed, tf.stack([num_samples]), _speech_band_gain, sample_rate)
    shifts = tf.random.stateless_uniform(
        [voices], seed=shift_seed, maxval=tf.maximum(num_samples, 1), dtype=tf.int32
    )
    hop = sample_rate // ENVELOPE_RATE
    slow_length = num_samples // hop + 2
    slow = _shaped_noise(
        envelope_seed, tf.stack([voices, slow_length]), _syllable_envelope_gain, ENVELOPE_RATE
    )  # [V, S / hop + 2]
    position = tf.range(num_samples, dtype=tf.float32) / hop  # [S] in envelope samples
    left = tf.cast(tf.floor(position), tf.int32)
    weight = position - tf.floor(position)
    envelopes = tf.nn.relu(
        tf.gather(slow, left, axis=1) * (1.0 - weight) + tf.gather(slow, left + 1, axis=1) * weight
    )  # [V, S], linear interpolation
    talkers = [tf.roll(carrier, shifts[v], axis=0) * envelopes[v] for v in range(voices)]
    return tf.add_n(talkers)  # [S]


def generate_noise(
    kind: str, num_samples: tf.Tensor, seed: tf.Tensor, sample_rate: int = 16000, voices: int = 6
) -> tf.Tensor:
    """Generated noise of one kind, unit RMS.

    Args:
        kind: ``"white"`` (flat spectrum), ``"pink"`` (1/f power) or ``"babble"``
            (several speech-band noises, each amplitude modulated at syllable rate,
            summed: a stand-in for distant talkers).
        num_samples: Scalar length S.
        seed: Stateless seed [2].
        sample_rate: Sample rate in Hz (sets the spectral shapes).
        voices: Talkers summed for ``"babble"``.

    Returns:
        float32 [S] with RMS 1 (or all zeros when S is 0).
    """
    num_samples = tf.cast(num_samples, tf.int32)
    if kind == "white":
        noise = tf.random.stateless_normal([num_samples], seed=seed)
    elif kind == "pink":
        noise = _shaped_noise(seed, tf.stack([num_samples]), _pink_gain, sample_rate)
    elif kind == "babble":
        noise = _babble(num_samples, seed, sample_rate, voices)
    else:
        raise ValueError(f"Noise kind must be one of {NOISE_KINDS}. Received: kind={kind!r}")
    return noise * tf.math.rsqrt(tf.maximum(tf.reduce_mean(tf.square(noise)), 1e-20))


class NoiseBank:
    """Noise recordings held in memory (bounded), sampled as random crops.

    Args:
        clips: Noise waveforms, float32 mono at the model's rate.
        max_seconds: Memory bound: clips are truncated so the bank holds at most this
            many seconds in total.
        sample_rate: Sample rate of the clips in Hz.
    """

    def __init__(
        self, clips: Sequence[np.ndarray], max_seconds: float = 600.0, sample_rate: int = 16000
    ) -> None:
        budget = int(max_seconds * sample_rate)
        kept: list[np.ndarray] = []
        for clip in clips:
            clip = np.asarray(clip, np.float32).ravel()
            clip = clip[: max(budget, 0)]
            if clip.size == 0 or not np.all(np.isfinite(clip)) or not np.any(clip):
                continue
            kept.append(clip)
            budget -= clip.size
        if not kept:
            raise ValueError(
                "NoiseBank needs at least one non-silent, finite noise clip within the "
                f"memory bound. Received: {len(clips)} clips, max_seconds={max_seconds}"
            )
        lengths = np.array([clip.size for clip in kept], np.int64)
        self.samples = tf.constant(np.concatenate(kept))  # [sum of lengths]
        self.starts = tf.constant(np.concatenate([[0], np.cumsum(lengths)[:-1]]))  # [N]
        self.lengths = tf.constant(lengths)  # [N]
        self.sample_rate = sample_rate

    @classmethod
    def from_files(
        cls, paths: Sequence[str], sample_rate: int = 16000, max_seconds: float = 600.0
    ) -> NoiseBank:
        """Loads noise files (e.g. a noise manifest's audio paths) with ``load_audio``."""
        from .audio import load_audio

        clips = []
        for path in paths:
            clips.append(load_audio(path, sample_rate=sample_rate))
            if sum(clip.size for clip in clips) >= max_seconds * sample_rate:
                break
        return cls(clips, max_seconds=max_seconds, sample_rate=sample_rate)

    @classmethod
    def generated(
        cls,
        kinds: Sequence[str] = NOISE_KINDS,
        seconds: float = 60.0,
        sample_rate: int = 16000,
        seed: int = 0,
    ) -> NoiseBank:
        """A bank of generated noise, one clip of ``seconds`` per kind.

        Drawing random crops from a precomputed clip costs a gather per utterance,
        where generating fresh noise costs random numbers and FFTs per utterance
        (the dominant cost of augmentation in tf.data on a CPU).
        """
        num_samples = int(seconds * sample_rate)
        clips = [
            generate_noise(
                kind, num_samples, tf.constant([seed, index], tf.int64), sample_rate
            ).numpy()
            for index, kind in enumerate(kinds)
        ]
        return cls(clips, max_seconds=seconds * len(clips), sample_rate=sample_rate)

    def sample(self, num_samples: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """A random crop of S samples from a random clip (looped if short), unit RMS."""
        clip_seed, offset_seed = tf.unstack(split_seed(seed, 2))
        count = tf.shape(self.lengths, out_type=tf.int64)[0]
        index = tf.random.stateless_uniform([], seed=clip_seed, maxval=count, dtype=tf.int64)
        length = self.lengths[index]
        offset = tf.random.stateless_uniform([], seed=offset_seed, maxval=length, dtype=tf.int64)
        positions = (offset + tf.range(tf.cast(num_samples, tf.int64))) % length  # [S]
        noise = tf.gather(self.samples, self.starts[index] + positions)
        return noise * tf.math.rsqrt(tf.maximum(tf.reduce_mean(tf.square(noise)), 1e-20))


def add_noise(waveform: tf.Tensor, noise: tf.Tensor, snr_db: tf.Tensor) -> tf.Tensor:
    """Mixes noise into a waveform at the given SNR (powers over the whole waveform).

    Args:
        waveform: float32 [S].
        noise: float32 [S], any level.
        snr_db: Scalar target ``10 log10(P_signal / P_noise)``.

    Returns:
        float32 [S]. A silent waveform stays silent (no SNR is defined for it).
    """
    signal_power = tf.reduce_mean(tf.square(waveform))
    noise_power = tf.maximum(tf.reduce_mean(tf.square(noise)), 1e-20)
    target_noise_power = signal_power / tf.pow(10.0, tf.cast(snr_db, tf.float32) / 10.0)
    return waveform + noise * tf.sqrt(target_noise_power / noise_power)


def apply_gain(waveform: tf.Tensor, gain_db: tf.Tensor) -> tf.Tensor:
    """Scales a waveform by ``gain_db`` decibels."""
    return waveform * tf.pow(10.0, tf.cast(gain_db, tf.float32) / 20.0)


def _pick_noise(
    num_samples: tf.Tensor,
    seed: tf.Tensor,
    config: AugmentConfig,
    noise_bank: NoiseBank | None,
    sample_rate: int,
) -> tf.Tensor:
    if noise_bank is not None:
        return noise_bank.sample(num_samples, seed)
    kind_seed, noise_seed = tf.unstack(split_seed(seed, 2))
    kinds = config.noise_kinds
    choice = tf.random.stateless_uniform([], seed=kind_seed, maxval=len(kinds), dtype=tf.int32)
    branches = [
        (lambda kind=kind: generate_noise(kind, num_samples, noise_seed, sample_rate))
        for kind in kinds
    ]
    return tf.switch_case(choice, branches)


# ---------------------------------------------------------------------------
# Waveform pipeline
# ---------------------------------------------------------------------------


def sample_speed_factor(seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """The speed factor for one utterance (1.0 when not perturbed)."""
    if config.speed_range is None:
        return tf.constant(1.0, tf.float32)
    apply_seed, value_seed = tf.unstack(split_seed(seed, 2))
    factor = _uniform(value_seed, config.speed_range[0], config.speed_range[1])
    return tf.where(_happens(apply_seed, config.speed_probability), factor, 1.0)


def sample_warp_factors(seed: tf.Tensor, batch_size: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """VTLP factors [B] drawn uniformly from ``config.vtlp_range`` (needs a range)."""
    if config.vtlp_range is None:
        raise ValueError("sample_warp_factors needs AugmentConfig.vtlp_range. Received: None")
    low, high = config.vtlp_range
    return tf.random.stateless_uniform(
        tf.reshape(batch_size, [1]), seed=seed, minval=low, maxval=high
    )


def augment_waveform(
    waveform: tf.Tensor,
    seed: tf.Tensor,
    config: AugmentConfig,
    noise_bank: NoiseBank | None = None,
    sample_rate: int = 16000,
    max_speed_factor: tf.Tensor | None = None,
) -> tf.Tensor:
    """Speed perturbation, then additive noise, then gain, on one utterance.

    Args:
        waveform: float32 [S].
        seed: Stateless seed [2]; the same seed gives the same output.
        config: What to apply.
        noise_bank: Recorded noise to mix in; generated noise when ``None``.
        sample_rate: Sample rate in Hz.
        max_speed_factor: Upper bound on the speed factor (the dataset passes the
            largest factor that still leaves CTC enough frames for the transcript).

    Returns:
        float32 [S'] (S' differs from S only through speed perturbation).
    """
    speed_seed, noise_seed, gain_seed = tf.unstack(split_seed(seed, 3))
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if config.speed_range is not None:
        factor = sample_speed_factor(speed_seed, config)
        if max_speed_factor is not None:
            factor = tf.minimum(factor, tf.maximum(tf.cast(max_speed_factor, tf.float32), 1.0))
        waveform = tf.cond(
            tf.equal(factor, 1.0), lambda: waveform, lambda: speed_perturb(waveform, factor)
        )
    if config.noise_probability > 0.0:
        apply_seed, snr_seed, source_seed = tf.unstack(split_seed(noise_seed, 3))

        def noisy() -> tf.Tensor:
            noise = _pick_noise(tf.shape(waveform)[0], source_seed, config, noise_bank, sample_rate)
            return add_noise(waveform, noise, _uniform(snr_seed, *config.snr_range))

        waveform = tf.cond(_happens(apply_seed, config.noise_probability), noisy, lambda: waveform)
    if config.gain_db_range is not None:
        waveform = apply_gain(waveform, _uniform(gain_seed, *config.gain_db_range))
    return waveform


# ---------------------------------------------------------------------------
# SpecAugment
# ---------------------------------------------------------------------------


def _band_mask(
    seed: tf.Tensor, num_masks: int, max_width: tf.Tensor, extent: tf.Tensor, size: tf.Tensor
) -> tf.Tensor:
    """Union of ``num_masks`` random bands per row: bool [B, size].

    Each band's width is uniform in ``[0, max_width[b]]`` and it lies inside
    ``[0, extent[b])``.
    """
    batch = tf.shape(extent)[0]
    width_seed, start_seed = tf.unstack(split_seed(seed, 2))
    max_width = tf.minimum(max_width, extent)  # [B]
    draw = tf.random.stateless_uniform(tf.stack([batch, num_masks]), seed=width_seed)  # [B, M]
    widths = tf.cast(
        tf.floor(draw * tf.cast(max_width[:, None] + 1, tf.float32)), tf.int32
    )  # [B, M]
    widths = tf.minimum(widths, max_width[:, None])
    room = tf.cast(extent[:, None] - widths + 1, tf.float32)  # [B, M]
    draw = tf.random.stateless_uniform(tf.stack([batch, num_masks]), seed=start_seed)  # [B, M]
    starts = tf.minimum(
        tf.cast(tf.floor(draw * room), tf.int32), extent[:, None] - widths
    )  # [B, M]
    positions = tf.range(size)[None, None, :]  # [1, 1, size]
    inside = (positions >= starts[:, :, None]) & (
        positions < (starts + widths)[:, :, None]
    )  # [B, M, size]
    return tf.reduce_any(inside, axis=1)  # [B, size]


def spec_augment(
    features: tf.Tensor, frame_lengths: tf.Tensor, seed: tf.Tensor, config: AugmentConfig
) -> tf.Tensor:
    """SpecAugment frequency and time masks on a padded batch.

    Masked cells take each utterance's per-bin mean over its valid frames, which is
    what per-utterance normalisation maps to zero (neutral). Masks stay inside each
    utterance's valid frames; padded frames are left untouched.

    Args:
        features: float32 [B, T, F].
        frame_lengths: int [B].
        seed: Stateless seed [2].
        config: Mask counts and widths.

    Returns:
        float32 [B, T, F].
    """
    features = tf.convert_to_tensor(features, tf.float32)
    frame_lengths = tf.cast(frame_lengths, tf.int32)
    batch, frames, bins = tf.shape(features)[0], tf.shape(features)[1], tf.shape(features)[2]
    valid = tf.sequence_mask(frame_lengths, frames)  # [B, T]
    masked = tf.zeros(tf.stack([batch, frames, bins]), tf.bool)
    freq_seed, time_seed = tf.unstack(split_seed(seed, 2))
    if config.freq_masks > 0 and config.freq_mask_width > 0:
        full = tf.fill([batch], bins)
        freq = _band_mask(
            freq_seed, config.freq_masks, tf.fill([batch], config.freq_mask_width), full, bins
        )
        masked |= freq[:, None, :]  # [B, T, F]
    if config.time_masks > 0 and config.time_mask_width > 0:
        ratio_cap = tf.cast(
            tf.floor(config.time_mask_ratio * tf.cast(frame_lengths, tf.float32)), tf.int32
        )
        widest = tf.minimum(ratio_cap, config.time_mask_width)  # [B]
        time = _band_mask(time_seed, config.time_masks, widest, frame_lengths, frames)
        masked |= time[:, :, None]  # [B, T, F]
    masked &= valid[:, :, None]
    weights = tf.cast(valid, tf.float32)[:, :, None]  # [B, T, 1]
    count = tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)  # [B, 1, 1]
    mean = tf.reduce_sum(features * weights, axis=1, keepdims=True) / count  # [B, 1, F]
    return tf.where(masked, mean, features)


@keras.saving.register_keras_serializable(package="stenograph")
class SpecAugment(keras.layers.Layer):
    """SpecAugment inside a model: masks in training, identity otherwise.

    For training setups that augment on the accelerator: place it after
    ``FeatureNormalizer``, where each utterance's per-bin mean (the mask value, see
    :func:`spec_augment`) is the neutral value. The dataset's own SpecAugment
    (``DatasetConfig.augment``) does the same on the CPU; use one or the other.

    Args:
        config: An ``AugmentConfig`` (only its mask fields are used) or its dict.
        seed: Seed of the layer's random masks.
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(
        self,
        config: AugmentConfig | dict[str, Any] | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if config is None:
            config = AugmentConfig()
        elif isinstance(config, dict):
            config = AugmentConfig.from_dict(config)
        self.config = config
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(
        self, features: tf.Tensor, frame_lengths: tf.Tensor, training: bool | None = None
    ) -> tf.Tensor:
        """Masks features [B, T, F] within ``frame_lengths`` [B] when training."""
        if not training:
            return features
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        return spec_augment(features, frame_lengths, seed, self.config)

    def compute_output_shape(self, features_shape: Any, frame_lengths_shape: Any = None) -> Any:
        """Same shape as the features."""
        return features_shape

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument."""
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}
