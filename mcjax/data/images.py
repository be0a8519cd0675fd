"""Images in and out: a table's images (rendered, or real ones from a folder), uint8 conversion, grids and PNG files.

Real GeoBiked images, for people who have them, are files named by bike index (``17.png``, ``17.jpg``).
``ImageFolderSource`` follows grain's random-access data source protocol (``__len__`` and ``__getitem__``), so it
plugs into ``grain.MapDataset.source(...)`` for shuffled, batched, multi-worker loading, and works as a plain sequence
without grain. It needs Pillow (a dependency of matplotlib) and no TensorFlow.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import numpy as np

from mcjax.data import render, tables
from mcjax.errors import InputError

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


class ImageData(NamedTuple):
    """The split table and one uint8 RGB image per table row (rendered, or read from ``data.image_dir``)."""

    table: tables.TableData
    images_NxHxWx3: np.ndarray


def load_images(data_config) -> ImageData:
    """The table of a ``config.data`` block, its split, and its images at ``data.image_size``."""
    raw = tables.table_from_config(data_config)
    data = tables.prepare_table(raw, data_config.test_fraction, data_config.split_seed)
    size = int(data_config.image_size)
    if data_config.image_dir:
        column = data_config.index_column
        values = tables.read_csv_columns(data_config.csv_path).get(column)
        if values is None:
            raise InputError(f"data.index_column {column!r} is not a column of {data_config.csv_path}.")
        source = ImageFolderSource(data_config.image_dir, [int(float(v)) for v in values], size)
        images = np.stack([source[i] for i in range(len(source))])
    else:
        images = render.render_cached(raw, size, data_config.render_cache_dir)
    return ImageData(data, images)


def to_signed_unit(images_BxHxWxC):
    """uint8 [0, 255] -> float32 [-1, 1]; float images are assumed to be in [-1, 1] already."""
    if images_BxHxWxC.dtype == np.uint8:
        return images_BxHxWxC.astype(np.float32) / 127.5 - 1.0
    return images_BxHxWxC.astype(np.float32)


def to_uint8(images_NxHxWx3: np.ndarray) -> np.ndarray:
    """uint8 images as they are; float images in [0, 1] rounded to [0, 255]."""
    images = np.asarray(images_NxHxWx3)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(images_RxCxHxWx3: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tiles a [rows, cols] array of images into one uint8 image with light-grey gaps."""
    tiles = to_uint8(images_RxCxHxWx3)
    rows, cols, h, w, _ = tiles.shape
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 200, np.uint8)
    for r in range(rows):
        for c in range(cols):
            grid[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = tiles[r, c]
    return grid


def save_png(image_HxWx3: np.ndarray, path: str) -> str:
    from PIL import Image

    Image.fromarray(to_uint8(image_HxWx3)).save(path)
    return path
