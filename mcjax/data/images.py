"""Real GeoBiked images from a folder, for people who have them: files named by bike index (``17.png``, ``17.jpg``).

``ImageFolderSource`` follows grain's random-access data source protocol (``__len__`` and ``__getitem__``), so it
plugs into ``grain.MapDataset.source(...)`` for shuffled, batched, multi-worker loading, and works as a plain sequence
without grain. It needs Pillow (a dependency of matplotlib) and no TensorFlow.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageFolderSource:
    """Images of the bikes ``indices`` (the table's "Bike index" values), resized to ``size`` × ``size`` RGB uint8
    (white padding keeps the aspect ratio). Every file is located up front: a missing one is an error at once, not
    in the middle of training."""

    def __init__(self, directory: str, indices: Sequence[int], size: int = 256):
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"Image folder not found: {directory}")
        by_index: dict[int, str] = {}
        for name in os.listdir(directory):
            stem, ext = os.path.splitext(name)
            if ext.lower() in EXTENSIONS and stem.isdigit():
                by_index[int(stem)] = os.path.join(directory, name)
        missing = [int(i) for i in indices if int(i) not in by_index]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) missing from {directory} (files are named by bike index, "
                                    f"e.g. 17.png), first: {missing[:5]}")
        self._paths = [by_index[int(i)] for i in indices]
        self.size = int(size)

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, record_key: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self._paths[record_key]) as image:
            image = image.convert("RGB")
            image.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
            canvas = Image.new("RGB", (self.size, self.size), (255, 255, 255))
            canvas.paste(image, ((self.size - image.width) // 2, (self.size - image.height) // 2))
            return np.asarray(canvas, np.uint8)
