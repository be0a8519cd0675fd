"""Small file helpers shared by training and evaluation."""

import os


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to a temporary file and renames it over ``path``: readers never see a half-written file."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
