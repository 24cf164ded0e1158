"""Common Voice recipe (see README.md)."""
