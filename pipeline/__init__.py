"""Stenograph's data pipeline: manifests, audio decoding, text, features, datasets."""

# Data-facing half: manifests, importers, audio decoding, text (see each module).
from .audio import AudioInfo, audio_info, load_audio
from .errors import (
    AudioDecodeError,
    CorpusError,
    ManifestError,
    PipelineError,
    Problem,
    ProblemReport,
    TextError,
)
from .importers import import_commonvoice, import_csv, import_librispeech, import_ljspeech
from .manifest import Utterance, iter_manifest, read_manifest, write_manifest
from .resample import resample, resample_tf
from .text import ENGLISH_ALPHABET, TextNormalizer, Vocabulary
from .tfio_compat import tfio_ops_available

# Features, augmentation, the in-graph WAV decoder and the tf.data dataset import
# TensorFlow, so they load on first use (PEP 562) and `import stenograph.pipeline`
# stays light.
_LAZY_EXPORTS = {
    "AudioFeatures": "features",
    "AugmentConfig": "augment",
    "Batch": "dataset",
    "DatasetConfig": "dataset",
    "FeatureConfig": "features",
    "FeatureNormalizer": "features",
    "NoiseBank": "augment",
    "SpecAugment": "augment",
    "compute_global_stats": "features",
    "decode_wav_tf": "wav",
    "decoded_source": "dataset",
    "make_dataset": "dataset",
    "num_frames": "features",
}


def __getattr__(name: str) -> object:
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "import_commonvoice",
    "import_csv",
    "import_librispeech",
    "import_ljspeech",
    "iter_manifest",
    "load_audio",
    "read_manifest",
    "resample",
    "resample_tf",
    "tfio_ops_available",
    "write_manifest",
    *_LAZY_EXPORTS,
]
