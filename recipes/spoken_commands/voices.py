"""Voices of the Debian text-to-speech engines, what is installed, and synthesis.

A `Voice` is one engine voice; its `speaker` is the SOURCE speaker, which is what
the splits hold out: festival's `voice_kal_diphone` and flite's `kal16` are both
speaker "kal", and the slt HTS and flite voices are both "slt". An espeak-ng
speaker is a voice variant (its formant and pitch settings, e.g. "espeak-m3"),
spoken with several English accents.

Synthesis writes WAV files at the engine's own rate; `generate.py` resamples.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# Variants whose formant settings sound like a person (the robot, whisper and
# croak variants are left out). "" is the accent's own default voice.
ESPEAK_VARIANTS = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "Alex",
    "Andy",
    "Annie",
    "adam",
    "anika",
    "aunty",
    "benjamin",
    "edward",
    "linda",
    "max",
    "michel",
    "paul",
    "robert",
    "steph",
)
_FEMALE_VARIANTS = frozenset(
    {"f1", "f2", "f3", "f4", "f5", "Annie", "anika", "aunty", "linda", "steph"}
)

FESTIVAL_VOICE_DIRS = {
    "voice_kal_diphone": "english/kal_diphone",
    "voice_ked_diphone": "english/ked_diphone",
    "voice_cmu_us_slt_arctic_hts": "us/cmu_us_slt_arctic_hts",
}
FESTIVAL_VOICE_PACKAGES = {
    "voice_kal_diphone": "festvox-kallpc16k",
    "voice_ked_diphone": "festvox-kdlpc16k",
    "voice_cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}
FESTIVAL_VOICE_ROOTS = ("/usr/share/festival/voices", "/usr/lib/festival/voices")
ENGINE_PACKAGES = {"espeak-ng": "espeak-ng", "festival": "festival", "flite": "flite"}
INSTALL_COMMAND = (
    "apt-get install -y sox espeak-ng festival festvox-kallpc16k festvox-kdlpc16k "
    "festvox-us-slt-hts flite"
)


@dataclass(frozen=True)
class Voice:
    """One engine voice.

    Attributes:
        engine: "espeak-ng", "festival" or "flite".
        name: The engine's name for it ("en-us+m3", "voice_kal_diphone", "kal16").
        speaker: The source speaker (the split unit): "kal", "slt", "espeak-m3".
        female: Whether the speaker's natural pitch is a woman's.
    """

    engine: str
    name: str
    speaker: str
    female: bool

    @property
    def key(self) -> str:
        """A unique, file-name-safe label such as "flite/kal16" or "espeak-ng/en-us+m3"."""
        return f"{self.engine}/{self.name}"


@dataclass(frozen=True)
class Prosody:
    """Engine-level speaking style of one utterance.

    Attributes:
        rate: Speaking rate relative to the voice's default (1.2 = 20% faster).
        pitch: Relative pitch in [-1, 1]: -1 is the low end of a human range for
            the voice's sex, +1 the high end.
        word_gap: Extra pause between words in 10 ms units (espeak-ng only).
    """

    rate: float = 1.0
    pitch: float = 0.0
    word_gap: int = 0


@dataclass(frozen=True)
class SynthesisRequest:
    """Text to speak with a voice and a prosody into `wav_path`."""

    voice: Voice
    text: str
    prosody: Prosody
    wav_path: str


def _espeak_voices() -> list[Voice]:
    voices = []
    for accent in ESPEAK_ACCENTS:
        for variant in ESPEAK_VARIANTS:
            name = f"{accent}+{variant}" if variant else accent
            speaker = f"espeak-{variant or 'default'}"
            voices.append(Voice("espeak-ng", name, speaker, variant in _FEMALE_VARIANTS))
    return voices


def all_voices() -> list[Voice]:
    """Every voice the generator knows, installed or not."""
    return [
        *_espeak_voices(),
        Voice("festival", "voice_kal_diphone", "kal", False),
        Voice("festival", "voice_ked_diphone", "ked", False),
        Voice("festival", "voice_cmu_us_slt_arctic_hts", "slt", True),
        Voice("flite", "kal16", "kal", False),
        Voice("flite", "awb", "awb", False),
        Voice("flite", "rms", "rms", False),
        Voice("flite", "slt", "slt", True),
    ]


@functools.cache
def _flite_voice_names() -> frozenset[str]:
    """Voices compiled into the installed flite (`flite -lv`)."""
    if shutil.which("flite") is None:
        return frozenset()
    listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False)
    _, _, names = listing.stdout.partition(":")
    return frozenset(names.split())


def _festival_voice_installed(name: str) -> bool:
    folder = FESTIVAL_VOICE_DIRS[name]
    return any((Path(root) / folder).is_dir() for root in FESTIVAL_VOICE_ROOTS)


def is_installed(voice: Voice) -> bool:
    """Whether the engine and the voice are installed (sox is checked separately)."""
    if shutil.which(voice.engine) is None:
        return False
    if voice.engine == "festival":
        return _festival_voice_installed(voice.name)
    if voice.engine == "flite":
        return voice.name in _flite_voice_names()
    return True


def installed_voices() -> list[Voice]:
    """The voices of `all_voices()` that can be used on this machine."""
    return [voice for voice in all_voices() if is_installed(voice)]


def missing_packages(voices: Sequence[Voice] | None = None) -> list[str]:
    """Debian packages to install for `voices` (default: every known voice) and sox.

    Args:
        voices: The voices wanted; None means all of `all_voices()`.

    Returns:
        Package names, sorted, empty when everything is installed.
    """
    wanted = all_voices() if voices is None else list(voices)
    missing: set[str] = set()
    if shutil.which("sox") is None:
        missing.add("sox")
    for voice in wanted:
        if shutil.which(voice.engine) is None:
            missing.add(ENGINE_PACKAGES[voice.engine])
        elif voice.engine == "festival" and not _festival_voice_installed(voice.name):
            missing.add(FESTIVAL_VOICE_PACKAGES[voice.name])
    return sorted(missing)


def select_voices(names: Sequence[str] | None = None) -> list[Voice]:
    """Resolves voice selectors to installed voices.

    Args:
        names: None for every installed voice, or selectors, each an engine
            ("flite"), a speaker ("kal", "espeak-m3") or a voice key
            ("flite/kal16", "espeak-ng/en-us+m3").

    Returns:
        The matching installed voices in catalogue order.

    Raises:
        ValueError: If a selector matches no known voice.
        RuntimeError: If the selection holds no installed voice; the message
            names the packages to install.
    """
    catalogue = all_voices()
    if names is None:
        chosen = catalogue
    else:
        chosen = []
        for selector in names:
            matches = [v for v in catalogue if selector in (v.engine, v.speaker, v.key)]
            if not matches:
                raise ValueError(
                    "Unknown voice selector; use an engine (espeak-ng, festival, flite), a "
                    f"speaker (kal, slt, espeak-m3) or a key (flite/kal16). Received: {selector!r}"
                )
            chosen.extend(v for v in matches if v not in chosen)
    usable = [v for v in chosen if is_installed(v)]
    if not usable or shutil.which("sox") is None:
        packages = " ".join(missing_packages(chosen)) or "sox"
        raise RuntimeError(
            "No usable text-to-speech voice (the generator needs sox and at least one "
            f"engine). Install the missing Debian packages: apt-get install -y {packages}"
        )
    return usable


def _espeak_command(request: SynthesisRequest) -> list[str]:
    prosody = request.prosody
    words_per_minute = round(175 * prosody.rate)
    pitch = round(50 + 25 * prosody.pitch)  # espeak-ng's 0..99 scale, 50 = the variant's own
    return [
        "espeak-ng",
        "-v",
        request.voice.name,
        "-s",
        str(words_per_minute),
        "-p",
        str(pitch),
        "-g",
        str(prosody.word_gap),
        "-w",
        request.wav_path,
        request.text,
    ]


def target_f0(voice: Voice, pitch: float) -> float:
    """Mean F0 in Hz for a relative pitch in [-1, 1]: 85-155 Hz men, 165-255 Hz women."""
    low, high = (165.0, 255.0) if voice.female else (85.0, 155.0)
    return low + (high - low) * (pitch + 1.0) / 2.0


def _flite_command(request: SynthesisRequest) -> list[str]:
    prosody = request.prosody
    f0 = target_f0(request.voice, prosody.pitch)
    return [
        "flite",
        "-voice",
        request.voice.name,
        "--setf",
        f"duration_stretch={1.0 / prosody.rate:.3f}",
        "--setf",
        f"int_f0_target_mean={f0:.1f}",
        "--setf",
        f"int_f0_target_stddev={0.12 * f0:.1f}",
        "-t",
        request.text,
        "-o",
        request.wav_path,
    ]


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_script(requests: Sequence[SynthesisRequest]) -> str:
    """A festival Scheme script that synthesizes every request in one process.

    Diphone voices take the rate through `Duration_Stretch` and the pitch through
    their linear-regression intonation targets; the HTS voice takes the rate
    through the engine's `-r` option (its pitch is shifted later with sox).
    """
    lines = []
    for request in requests:
        voice, prosody = request.voice, request.prosody
        lines.append(f"({voice.name})")
        if voice.name == "voice_cmu_us_slt_arctic_hts":
            lines.append(
                "(set! hts_engine_params (append cmu_us_slt_arctic_hts::hts_engine_params "
                f'(list (list "-r" {prosody.rate:.3f}))))'
            )
        else:
            f0 = target_f0(voice, prosody.pitch)
            lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / prosody.rate:.3f})")
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {f0:.1f}) (target_f0_std "
                f"{0.13 * f0:.1f}) (model_f0_mean 170) (model_f0_std 34)))"
            )
        lines.append(
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(request.text)})) "
            f"{_scheme_string(request.wav_path)} 'riff)"
        )
    return "\n".join(lines) + "\n"


def synthesize(requests: Sequence[SynthesisRequest], work_dir: str | Path) -> list[str]:
    """Speaks every request into its WAV file; festival requests share one process.

    Args:
        requests: What to speak.
        work_dir: A folder for the festival script.

    Returns:
        Error messages, one per request that produced no audio (empty on success).
    """
    errors = []
    festival_requests = [r for r in requests if r.voice.engine == "festival"]
    for request in requests:
        if request.voice.engine == "festival":
            continue
        command = (
            _espeak_command(request)
            if request.voice.engine == "espeak-ng"
            else _flite_command(request)
        )
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            errors.append(f"{request.voice.key} failed on {request.text!r}: {result.stderr}")
    if festival_requests:
        script = Path(work_dir) / "synthesize.scm"
        script.write_text(festival_script(festival_requests))
        result = subprocess.run(
            ["festival", "-b", str(script)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            errors.append(f"festival failed: {result.stderr.strip()}")
    for request in requests:
        path = Path(request.wav_path)
        if not path.is_file() or path.stat().st_size <= 44:
            errors.append(f"{request.voice.key} wrote no audio for {request.text!r}")
    return errors
