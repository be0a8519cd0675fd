"""Default configs, importable from research code; the files in the repository's configs/ folder load these."""
