"""Waveform effects for the commands corpus: trimming, voice variety, augmentation.

Every function takes and returns float32 mono audio at `sample_rate` and is pure
given its arguments (randomness comes in through an explicit `numpy.random.Generator`).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

SAMPLE_RATE = 16000
NOISE_COLORS = ("white", "pink", "brown")


def trim_silence(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    threshold_db: float = 40.0,
    floor_dbfs: float = -60.0,
    keep_seconds: float = 0.05,
) -> np.ndarray:
    """Cuts leading and trailing silence.

    A 10 ms frame counts as sound when its RMS is within `threshold_db` of the
    loudest frame and above `floor_dbfs`; `keep_seconds` of context stay on both
    sides so soft onsets and releases survive.

    Args:
        audio: Mono waveform, float32.
        sample_rate: Sampling rate in Hz.
        threshold_db: Frames this far below the loudest frame count as silence.
        floor_dbfs: Frames below this absolute level count as silence.
        keep_seconds: Context kept before the first and after the last sound frame.

    Returns:
        The trimmed waveform (empty if the input holds no sound).
    """
    frame = max(1, sample_rate // 100)
    num_frames = len(audio) // frame
    if num_frames == 0:
        return audio[:0]
    frames = audio[: num_frames * frame].reshape(num_frames, frame)  # [N, frame]
    level_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    threshold = max(level_db.max() - threshold_db, floor_dbfs)
    active = np.flatnonzero(level_db > threshold)
    if active.size == 0:
        return audio[:0]
    keep = int(keep_seconds * sample_rate)
    start = max(0, active[0] * frame - keep)
    end = min(len(audio), (active[-1] + 1) * frame + keep)
    return audio[start:end]


def vtlp_source_frequencies(
    frequencies: np.ndarray, alpha: float, nyquist: float, boundary: float = 4800.0
) -> np.ndarray:
    """Maps output frequencies to the source frequencies of a VTLP warp.

    The forward warp (Jaitly & Hinton, 2013) scales frequencies by `alpha` up to
    a boundary and then runs linearly so that the Nyquist frequency stays put.

    Args:
        frequencies: Output frequencies in Hz, ascending.
        alpha: Warp factor; > 1 raises formants (a shorter vocal tract).
        nyquist: Half the sampling rate in Hz.
        boundary: Frequency (before scaling by min(alpha, 1)) where the warp bends.

    Returns:
        For each output frequency, the source frequency that lands there.
    """
    bend = boundary * min(alpha, 1.0) / alpha
    grid = np.linspace(0.0, nyquist, 1025)
    warped = np.where(
        grid <= bend,
        grid * alpha,
        nyquist - (nyquist - alpha * bend) / (nyquist - bend) * (nyquist - grid),
    )
    return np.interp(frequencies, warped, grid)


def lpc_log_envelope(frames: np.ndarray, order: int, fft_length: int) -> np.ndarray:
    """Log spectral envelopes of windowed frames by linear prediction.

    An all-pole fit follows sharp formants but not the harmonics of the pitch,
    which a cepstral smoothing cannot do for low voices at 16 kHz.

    Args:
        frames: Windowed frames, [T, N].
        order: Prediction order (about 2 poles per kHz of bandwidth, plus 2).
        fft_length: FFT size of the returned envelope.

    Returns:
        Natural-log magnitude envelopes, [fft_length // 2 + 1, T].
    """
    power = np.abs(np.fft.rfft(frames, n=2 * frames.shape[1], axis=1)) ** 2  # [T, N + 1]
    autocorrelation = np.fft.irfft(power, axis=1)[:, : order + 1]  # [T, order + 1]
    # A -60 dB white floor keeps silent frames and the recursion well conditioned.
    autocorrelation[:, 0] = autocorrelation[:, 0] * (1.0 + 1e-6) + 1e-9
    coefficients = np.zeros_like(autocorrelation)  # [T, order + 1]
    coefficients[:, 0] = 1.0
    error = autocorrelation[:, 0].copy()  # [T]
    for i in range(1, order + 1):
        # Levinson-Durbin step i, for every frame at once.
        acc = np.sum(coefficients[:, :i] * autocorrelation[:, i:0:-1], axis=1)  # [T]
        reflection = -acc / error
        previous = coefficients.copy()
        coefficients[:, 1 : i + 1] = (
            previous[:, 1 : i + 1] + reflection[:, None] * previous[:, i - 1 :: -1][:, :i]
        )
        error *= 1.0 - reflection**2
    response = np.fft.rfft(coefficients, n=fft_length, axis=1)  # [T, F]
    log_envelope = 0.5 * np.log(np.maximum(error, 1e-20))[:, None] - np.log(
        np.abs(response) + 1e-12
    )
    return log_envelope.T  # [F, T]


def warp_formants(
    audio: np.ndarray,
    alpha: float,
    sample_rate: int = SAMPLE_RATE,
    fft_length: int = 512,
    lpc_order: int = 18,
) -> np.ndarray:
    """Moves the spectral envelope (formants) by a VTLP warp, keeping pitch.

    Each STFT frame is divided by its linear-prediction envelope and multiplied
    by the warped envelope, so the harmonics (the pitch) stay where they are and
    the speaker sounds like one with a longer (`alpha` < 1) or shorter
    (`alpha` > 1) vocal tract.

    Args:
        audio: Mono waveform, float32.
        alpha: Warp factor, typically 0.86..1.16.
        sample_rate: Sampling rate in Hz.
        fft_length: STFT size.
        lpc_order: Linear-prediction order of the envelope.

    Returns:
        The warped waveform, same length as `audio`.
    """
    if alpha == 1.0 or len(audio) < fft_length:
        return audio
    hop = fft_length // 4
    _, _, spectrum = signal.stft(audio, nperseg=fft_length, noverlap=fft_length - hop)
    # spectrum: [F, T] complex, F = fft_length // 2 + 1; frame t is centred at t * hop.
    padded = np.pad(audio.astype(np.float64), (fft_length // 2, fft_length))
    starts = np.arange(spectrum.shape[1]) * hop
    frames = padded[starts[:, None] + np.arange(fft_length)] * np.hanning(fft_length)  # [T, N]
    envelope = lpc_log_envelope(frames, lpc_order, fft_length)  # [F, T]
    bins = np.arange(spectrum.shape[0], dtype=np.float64)
    nyquist = sample_rate / 2.0
    source_bins = vtlp_source_frequencies(bins * nyquist / bins[-1], alpha, nyquist)
    source_bins *= bins[-1] / nyquist
    low = np.clip(np.floor(source_bins).astype(int), 0, len(bins) - 1)
    high = np.clip(low + 1, 0, len(bins) - 1)
    weight = (source_bins - low)[:, None]  # [F, 1]
    warped_envelope = (1.0 - weight) * envelope[low] + weight * envelope[high]  # [F, T]
    # Bounded so a near-empty bin in a quiet frame cannot explode.
    gain = np.exp(np.clip(warped_envelope - envelope, -4.0, 4.0))
    _, warped = signal.istft(spectrum * gain, nperseg=fft_length, noverlap=fft_length - hop)
    return _fit_length(warped.astype(np.float32), len(audio))


def synthetic_room_impulse_response(
    rt60: float,
    direct_to_reverberant_db: float,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Makes a room impulse response: a direct path plus an exponential noise tail.

    The tail decays by 60 dB in `rt60` seconds and loses high frequencies faster
    than low ones, as air and soft surfaces do.

    Args:
        rt60: Reverberation time in seconds.
        direct_to_reverberant_db: Energy of the direct path over the tail, in dB.
        rng: Random generator for the tail.
        sample_rate: Sampling rate in Hz.

    Returns:
        The impulse response, float32, starting with the direct path at 1.0.
    """
    length = max(2, int(rt60 * sample_rate))
    times = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9078 * times / rt60)
    cutoff = rng.uniform(2500.0, 7000.0)
    tail = signal.sosfilt(signal.butter(2, cutoff, fs=sample_rate, output="sos"), tail)
    predelay = int(rng.uniform(0.002, 0.012) * sample_rate)
    tail[:predelay] = 0.0
    tail_energy = float(np.sum(tail**2)) + 1e-12
    tail *= np.sqrt(10.0 ** (-direct_to_reverberant_db / 10.0) / tail_energy)
    tail[0] = 1.0
    return tail.astype(np.float32)


def add_reverb(
    audio: np.ndarray, impulse_response: np.ndarray, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Convolves with a room impulse response, keeping at most 0.3 s of tail."""
    wet = signal.fftconvolve(audio, impulse_response)
    return wet[: len(audio) + int(0.3 * sample_rate)].astype(np.float32)


def telephone_band(audio: np.ndarray, mu_law: bool, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Sends audio through a telephone line: 300-3400 Hz, 8 kHz, optionally G.711 mu-law.

    Args:
        audio: Mono waveform, float32.
        mu_law: Also quantise through 8-bit mu-law companding at 8 kHz, as G.711
            lines do (its quantisation noise stays below 4 kHz).
        sample_rate: Sampling rate in Hz (a multiple of 8000).

    Returns:
        The band-limited waveform at `sample_rate`, same length as `audio`.
    """
    factor = sample_rate // 8000
    sos = signal.butter(8, (300.0, 3400.0), btype="bandpass", fs=sample_rate, output="sos")
    narrow = signal.sosfilt(sos, audio)
    line = signal.resample_poly(narrow, 1, factor)  # [S / factor] at 8 kHz
    if mu_law:
        peak = float(np.max(np.abs(line))) + 1e-9
        mu = 255.0
        companded = np.sign(line) * np.log1p(mu * np.abs(line) / peak) / np.log1p(mu)
        quantized = np.round(companded * 127.0) / 127.0
        line = np.sign(quantized) * ((1.0 + mu) ** np.abs(quantized) - 1.0) / mu * peak
    wide = signal.resample_poly(line, factor, 1)  # [S] back at sample_rate
    return _fit_length(wide.astype(np.float32), len(audio))


def colored_noise(length: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Makes unit-RMS noise with a white, pink (1/f) or brown (1/f^2) power spectrum.

    Raises:
        ValueError: If `color` is not one of `NOISE_COLORS`.
    """
    if color not in NOISE_COLORS:
        raise ValueError(f"color must be one of {NOISE_COLORS}. Received: color={color!r}")
    white = rng.standard_normal(length)
    if color == "white" or length < 2:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        frequencies = np.arange(len(spectrum), dtype=np.float64)
        frequencies[0] = 1.0
        exponent = 0.5 if color == "pink" else 1.0
        noise = np.fft.irfft(spectrum / frequencies**exponent, n=length)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def active_rms(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """RMS over the frames within 30 dB of the loudest one (the speech, not the pauses)."""
    frame = sample_rate // 100
    num_frames = len(audio) // frame
    if num_frames == 0:
        return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2) + 1e-12))
    frames = audio[: num_frames * frame].reshape(num_frames, frame)  # [N, frame]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    loud = power[power > power.max() * 1e-3]
    return float(np.sqrt(np.mean(loud) + 1e-12))


def set_level(audio: np.ndarray, level_dbfs: float, peak_dbfs: float = -1.0) -> np.ndarray:
    """Scales speech to an active RMS level, lowering it if the peak would pass `peak_dbfs`."""
    gain = 10.0 ** (level_dbfs / 20.0) / active_rms(audio)
    peak = float(np.max(np.abs(audio))) * gain
    limit = 10.0 ** (peak_dbfs / 20.0)
    if peak > limit:
        gain *= limit / peak
    return (audio * gain).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """Adds colored noise at a signal-to-noise ratio measured on the active speech."""
    noise = colored_noise(len(audio), color, rng)
    noise *= active_rms(audio) / 10.0 ** (snr_db / 20.0)
    return (audio + noise).astype(np.float32)


def pad(
    audio: np.ndarray, lead_seconds: float, tail_seconds: float, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Surrounds audio with digital silence."""
    lead = np.zeros(int(lead_seconds * sample_rate), np.float32)
    tail = np.zeros(int(tail_seconds * sample_rate), np.float32)
    return np.concatenate([lead, audio, tail])  # [lead + S + tail]


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))
