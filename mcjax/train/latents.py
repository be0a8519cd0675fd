"""Precomputing scaled VAE latents of a dataset once, so latent-diffusion training never runs the encoder.

The output is a plain ``.npy`` file of float32 latents [N, h, w, C]; ``load_latents`` memory-maps it.
"""

import functools
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import jax
import numpy as np

from mcjax.data.batching import fixed_size_batches
from mcjax.data.images import to_signed_unit
from mcjax.errors import InputError
from mcjax.models.autoencoder_kl import AutoencoderKL, encode_to_latents
from mcjax.train.metrics import ProgressBar

_NPY_HEADER_BYTES = 128  # fixed so the header can be written after N is known


def _fixed_size_batches(images, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(batch padded to batch_size, number of real images) from an array or an iterable of batches."""
    batches = [images] if hasattr(images, "shape") else images
    for batch in batches:
        yield from fixed_size_batches(np.asarray(batch), batch_size)


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version-1.0 ``.npy`` header for C-ordered little-endian float32 data, padded to a fixed size."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}"
    text = text.ljust(_NPY_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def precompute_latents(
    module: AutoencoderKL,
    variables,
    images: np.ndarray | Iterable[np.ndarray],
    batch_size: int,
    out_path: str | os.PathLike,
    key=None,
    progress: bool = True,
) -> Path:
    """Encodes images_NxHxWxC (uint8, or float in [-1, 1]; an array or an iterable of batches) to ``out_path``.

    Latents are scaled like ``encode_to_latents``: the posterior mean when ``key`` is None, else a
    sample with ``fold_in(key, batch_index)``. Batches stream to a temporary file that replaces
    ``out_path`` only when complete, so memory stays O(batch) and a crash leaves no partial file.
    """
    out_path = Path(out_path)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    progress_bar = ProgressBar(len(images) if hasattr(images, "shape") else None, "encoding", enabled=progress)
    encode = _encoder(module)
    count, latent_shape = 0, None
    try:
        with open(tmp_path, "wb") as f:
            f.write(b"\0" * _NPY_HEADER_BYTES)
            for latents_Bxhxwxl in _encoded(encode, variables, _fixed_size_batches(images, batch_size), key):
                f.write(latents_Bxhxwxl.astype("<f4").tobytes())
                count, latent_shape = count + len(latents_Bxhxwxl), latents_Bxhxwxl.shape[1:]
                progress_bar.update(count)
            progress_bar.finish()
            if latent_shape is None:
                raise InputError("no images to encode")
            f.seek(0)
            f.write(_npy_header((count, *latent_shape)))
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return out_path


def encode_images(module: AutoencoderKL, variables, images: np.ndarray | Iterable[np.ndarray], batch_size: int,
                  key=None) -> np.ndarray:
    """``precompute_latents`` into host memory: latents [N, h, w, C] of every image."""
    return np.concatenate(list(_encoded(_encoder(module), variables, _fixed_size_batches(images, batch_size), key)))


@functools.lru_cache(maxsize=8)
def _encoder(module: AutoencoderKL):
    """One compiled encoder per first stage (modules compare by their config), however often latents are made."""
    return jax.jit(lambda v, x_BxHxWxC, k: encode_to_latents(module, v, to_signed_unit(x_BxHxWxC), k))


def _encoded(encode, variables, batches: Iterable[tuple[np.ndarray, int]], key) -> Iterator[np.ndarray]:
    """Host latents of each batch; batch i + 1 is dispatched before batch i is copied back, so they overlap."""
    pending = None
    for index, (batch, n) in enumerate(batches):
        batch_key = None if key is None else jax.random.fold_in(key, index)
        dispatched = (encode(variables, batch, batch_key), n)
        if pending is not None:
            yield np.asarray(pending[0][: pending[1]])
        pending = dispatched
    if pending is not None:
        yield np.asarray(pending[0][: pending[1]])


def load_latents(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Latents [N, h, w, C] written by ``precompute_latents``, memory-mapped read-only by default."""
    return np.load(path, mmap_mode="r" if mmap else None)
