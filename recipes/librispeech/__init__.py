"""LibriSpeech recipe (see README.md)."""
