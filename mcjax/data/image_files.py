"""Image files on disk as a lazy uint8 array: only the rows asked for are decoded, in parallel, never the whole set.

Any common mode (L, RGB, RGBA, P, ...) and format Pillow reads (PNG, JPEG, WebP, BMP) decodes to the same RGB array
for the same picture: transparency is composited on white and the EXIF orientation applied. ``fit`` makes it square:
``pad`` keeps the whole picture with white borders (drawings, renders), ``crop`` fills the square and cuts the longer
side's ends (photos). ``ImageFiles`` follows grain's random-access source protocol (``__len__``, ``__getitem__``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mcjax.errors import InputError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FITS = ("pad", "crop")
WHITE = (255, 255, 255)


def _on_white(image):
    """RGB of any mode; transparent pixels over white, so RGBA and P pictures look as they do on a page."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


def decode(path: str, size: int, fit: str = "pad") -> np.ndarray:
    """One file → uint8 [size, size, 3] (see the module docstring for ``fit``)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        rgb = _on_white(ImageOps.exif_transpose(image))
    if fit == "crop":
        square = ImageOps.fit(rgb, (size, size), Image.Resampling.LANCZOS)
    else:
        square = ImageOps.pad(rgb, (size, size), Image.Resampling.LANCZOS, color=WHITE)
    return np.asarray(square, np.uint8)


def unreadable(path: str) -> str | None:
    """Why ``path`` cannot be an image (missing, or not an image Pillow can identify), or None. Reads the header
    only, so checking every file up front is cheap; data damaged past the header surfaces when it is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        return "no such file"
    try:
        with Image.open(path):
            return None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return f"not a readable image ({error})"


def _pool(workers: int) -> ThreadPoolExecutor:
    """Threads suffice: Pillow releases the GIL while decoding and resizing."""
    return ThreadPoolExecutor(workers or min(32, (os.cpu_count() or 1) + 4))


def find_unreadable(paths: Sequence[str], workers: int = 0) -> dict[int, str]:
    """{position: reason} of every path that is missing or not an image, checked in parallel."""
    with _pool(workers) as pool:
        reasons = list(pool.map(unreadable, paths))
    return {i: reason for i, reason in enumerate(reasons) if reason is not None}


class ImageFiles:
    """``paths`` as a uint8 array [N, size, size, 3] decoded on access: ``files[i]`` one image, ``files[rows]``
    (an index array or slice) a stacked batch decoded by ``workers`` threads (0: one per core + 4). ``rows`` are the
    table rows the files belong to, named in errors."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Sequence[str], size: int, fit: str = "pad", rows: Sequence[int] | None = None,
                 workers: int = 0):
        if fit not in FITS:
            raise InputError(f"data.image_fit {fit!r} is not one of {FITS}.")
        self.paths = tuple(str(p) for p in paths)
        self.size, self.fit, self.workers = int(size), fit, int(workers)
        self.rows = tuple(int(r) for r in rows) if rows is not None else tuple(range(len(self.paths)))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.size, self.size, 3)

    def _decode(self, index: int) -> np.ndarray:
        try:
            return decode(self.paths[index], self.size, self.fit)
        except Exception as error:  # Pillow raises many kinds for damaged files
            raise InputError(f"Image {self.paths[index]} (table row {self.rows[index]}) cannot be read: "
                             f"{error}") from error

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._decode(int(key))
        indices = np.arange(len(self))[key]
        with _pool(self.workers) as pool:
            images = list(pool.map(self._decode, indices))
        return np.stack(images) if images else np.zeros((0, *self.shape[1:]), np.uint8)

    def batches(self, batch_size: int, indices: Sequence[int] | None = None) -> Iterator[np.ndarray]:
        """The images of ``indices`` (default: all) in batches of ``batch_size``; the next batch decodes while the
        caller works on this one, so at most two batches are in memory."""
        indices = np.arange(len(self)) if indices is None else np.asarray(indices)
        with _pool(self.workers) as pool:
            pending = None
            for start in range(0, len(indices), batch_size):
                submitted = [pool.submit(self._decode, int(i)) for i in indices[start:start + batch_size]]
                if pending is not None:
                    yield np.stack([f.result() for f in pending])
                pending = submitted
            if pending is not None:
                yield np.stack([f.result() for f in pending])

    def fingerprint(self) -> str:
        """A hash of each file's path, size and modification time plus the decoding settings: it changes when an
        image does, without reading any pixels."""
        digest = hashlib.sha256(json.dumps([self.size, self.fit]).encode())
        for path in self.paths:
            stat = os.stat(path)
            digest.update(json.dumps([path, stat.st_size, stat.st_mtime_ns]).encode())
        return digest.hexdigest()


def relative_image_paths(image_dir: str, cells: Sequence[str], column: str) -> list[str]:
    """Paths of a table's image cells, each relative to ``image_dir`` (subfolders allowed). A path that is empty,
    absolute or leads out of ``image_dir`` is an error naming its row."""
    if not os.path.isdir(image_dir):
        raise InputError(f"data.image_dir {image_dir!r} is not a folder.")
    paths = []
    for row, cell in enumerate(cells):
        text = cell.strip()
        if not text:
            raise InputError(f"Column {column!r}, row {row}: the image path is empty.")
        if os.path.isabs(text) or os.path.splitdrive(text)[0]:
            raise InputError(f"Column {column!r}, row {row}: image path {text!r} is absolute; give it relative to "
                             f"data.image_dir.")
        normal = os.path.normpath(text)
        if normal == os.pardir or normal.startswith(os.pardir + os.sep):
            raise InputError(f"Column {column!r}, row {row}: image path {text!r} leads out of data.image_dir.")
        paths.append(os.path.join(image_dir, normal))
    return paths


def check_unique(paths: Sequence[str]) -> None:
    """Two rows naming one image file would put one picture in the table twice (perhaps in both splits)."""
    first_row: dict[str, int] = {}
    for row, path in enumerate(paths):
        if path in first_row:
            raise InputError(f"Rows {first_row[path]} and {row} both name image {path} (duplicate image rows).")
        first_row[path] = row


def indexed_image_paths(image_dir: str, indices: Sequence[int]) -> list[str]:
    """Paths of images named by an index (``17.png``, ``17.jpg``, ...) in one folder, in the order of ``indices``;
    a missing file keeps its would-be name ``<index>.png`` (reported as missing later)."""
    if not os.path.isdir(image_dir):
        raise InputError(f"data.image_dir {image_dir!r} is not a folder.")
    by_index: dict[int, str] = {}
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in EXTENSIONS and stem.isdigit():
            by_index.setdefault(int(stem), os.path.join(image_dir, name))
    return [by_index.get(int(i), os.path.join(image_dir, f"{int(i)}.png")) for i in indices]
