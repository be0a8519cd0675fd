"""Images in and out: a table's images (rendered, or files read lazily), uint8 conversion, grids and PNG files.

Three sources, chosen by ``config.data``: ``image_column`` set — a CSV listing each row's image file relative to
``image_dir`` (any image dataset, configs/image_folder_ldm.py); ``image_dir`` alone — real GeoBiked images, files
named by the ``index_column`` value (``Bike index``: ``17.png``, ``17.jpg``); neither — bikes rendered from the
table. Files stay on disk (``mcjax.data.image_files.ImageFiles``) and are decoded when a batch is asked for.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Sequence

import numpy as np

from mcjax.data import render, tables
from mcjax.data.image_files import ImageFiles, check_unique, find_unreadable, indexed_image_paths
from mcjax.data.image_tables import read_image_table
from mcjax.errors import InputError


class ImageData(NamedTuple):
    """The split table and one uint8 RGB image per table row: an array (renders) or ``ImageFiles`` (decoded on
    access); both index as ``images_NxHxWx3[rows]``."""

    table: tables.TableData
    images_NxHxWx3: np.ndarray | ImageFiles


def _table_and_paths(data_config) -> tuple[tables.RawTable, list[str]]:
    """The table and each row's image file, for the two file sources (see the module docstring)."""
    if data_config.image_column:
        return read_image_table(data_config)
    raw = tables.table_from_config(data_config)
    column = data_config.index_column
    values = tables.read_csv_columns(data_config.csv_path).get(column)
    if values is None:
        raise InputError(f"data.index_column {column!r} is not a column of {data_config.csv_path}.")
    return raw, indexed_image_paths(data_config.image_dir, [int(float(v)) for v in values])


def readable_rows(paths: Sequence[str], skip: bool, workers: int = 0) -> np.ndarray:
    """Rows whose image file exists and can be opened. An unreadable one stops with an error naming the file and
    its row, unless ``skip``: then those rows are left out and counted."""
    bad = find_unreadable(paths, workers)
    if bad and not skip:
        row, reason = next(iter(bad.items()))
        also = f" ({len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(f"Image {paths[row]} (table row {row}): {reason}{also}; set data.skip_unreadable_images=True "
                         f"to leave such rows out.")
    if bad:
        row, reason = next(iter(bad.items()))
        print(f"mcjax: skipped {len(bad)} of {len(paths)} rows whose image is missing or unreadable (first: "
              f"{paths[row]}, table row {row}: {reason})", flush=True)
    kept = np.setdiff1d(np.arange(len(paths)), list(bad))
    if not len(kept):
        raise InputError(f"None of the {len(paths)} images can be read.")
    return kept


def load_images(data_config) -> ImageData:
    """The table of a ``config.data`` block, its split, and its images at ``data.image_size``."""
    size = int(data_config.image_size)
    if not (data_config.image_column or data_config.image_dir):
        raw = tables.table_from_config(data_config)
        images = render.render_cached(raw, size, data_config.render_cache_dir)
        return ImageData(tables.prepare_table(raw, data_config.test_fraction, data_config.split_seed), images)
    raw, paths = _table_and_paths(data_config)
    check_unique(paths)
    workers = int(data_config.decode_workers)
    kept = readable_rows(paths, bool(data_config.skip_unreadable_images), workers)
    data = tables.prepare_table(raw.take(kept), data_config.test_fraction, data_config.split_seed)
    files = ImageFiles([paths[r] for r in kept], size, data_config.image_fit, kept, workers)
    return ImageData(data, files)


def image_batches(images_NxHxWx3, batch_size: int):
    """Consecutive batches of an image array or of ``ImageFiles`` (decoded ahead in parallel, two batches at most
    in memory)."""
    if isinstance(images_NxHxWx3, ImageFiles):
        return images_NxHxWx3.batches(batch_size)
    return (images_NxHxWx3[i:i + batch_size] for i in range(0, len(images_NxHxWx3), batch_size))


def content_key(images_NxHxWx3) -> str:
    """A hash of what the images are: each file's path, size and modification time, or an array's pixels."""
    if isinstance(images_NxHxWx3, ImageFiles):
        return images_NxHxWx3.fingerprint()
    pixels = np.ascontiguousarray(images_NxHxWx3)
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


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
