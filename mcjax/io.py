"""Small file helpers shared by training and evaluation."""

import os

import numpy as np


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to a temporary file and renames it over ``path``: readers never see a half-written file, and
    processes writing the same file at once (search workers sharing a workdir) each rename a whole one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def atomic_save_npy(path: str, array) -> None:
    """``np.save`` through a temporary file renamed over ``path``."""
    with open(path + ".tmp", "wb") as f:
        np.save(f, array)
    os.replace(path + ".tmp", path)
