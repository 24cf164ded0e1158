"""Recipe for any JSON-lines or CSV manifest (see README.md)."""
