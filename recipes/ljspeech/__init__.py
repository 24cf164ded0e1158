"""LJSpeech recipe (see README.md)."""
