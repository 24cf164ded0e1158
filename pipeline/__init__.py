"""Stenograph's data pipeline: manifests, audio decoding, text, features, datasets."""

# Data-facing half: manifests, importers, audio decoding, text (see each module).
from .audio import AudioInfo, audio_info, decode_wav_tf, load_audio, resample, resample_tf
from .errors import (
    AudioDecodeError,
    CorpusError,
    ManifestError,
    PipelineError,
    Problem,
    ProblemReport,
    TextError,
)
from .manifest import Utterance, iter_manifest, read_manifest, write_manifest
from .text import ENGLISH_ALPHABET, TextNormalizer, Vocabulary
from .tfio_compat import tfio_ops_available

__all__ = [
    "AudioDecodeError",
    "AudioInfo",
    "CorpusError",
    "ENGLISH_ALPHABET",
    "ManifestError",
    "PipelineError",
    "Problem",
    "ProblemReport",
    "TextError",
    "TextNormalizer",
    "Utterance",
    "Vocabulary",
    "audio_info",
    "decode_wav_tf",
    "iter_manifest",
    "load_audio",
    "read_manifest",
    "resample",
    "resample_tf",
    "tfio_ops_available",
    "write_manifest",
]
