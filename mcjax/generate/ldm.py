"""Images from a trained mcLDM, with any subset of its conditions, loaded from the run directory's bundle alone.

The bundle holds the U-Net's EMA parameters and batch statistics; the first stage is the one the run used (its
``W/autoencoder``, or ``first_stage.pretrained``), read in the diffusers format.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np

from mcjax import run_dir
from mcjax.data.images import image_grid, save_png, to_uint8
from mcjax.data.tables import TableStats
from mcjax.generate import plotting
from mcjax.models.autoencoder_kl_weights import from_pretrained
from mcjax.models.ldm import LDM, SamplerSettings, generate_for_rows, noise_schedule, unet_from_config


@dataclasses.dataclass(frozen=True)
class TrainedLDM:
    """A trained mcLDM and the statistics that encode its conditions."""

    ldm: LDM
    stats: TableStats


def load_ldm_run(workdir: str) -> TrainedLDM:
    """The trained mcLDM in ``workdir``, from its inference bundle."""
    bundle = run_dir.read_bundle(workdir, "ldm")
    stats = TableStats.from_json(bundle.stats_json)
    first_stage = bundle.manifest["first_stage"]
    path = os.path.join(workdir, first_stage["path"]) if first_stage["in_workdir"] else first_stage["path"]
    autoencoder, autoencoder_variables = from_pretrained(path)
    latent_shape = tuple(int(d) for d in bundle.manifest["latent_shape"])
    unet = unet_from_config(bundle.config.model, stats.conditions, latent_shape[-1])
    ldm = LDM(unet, bundle.weights("unet"), autoencoder, autoencoder_variables, noise_schedule(bundle.config.diffusion),
              latent_shape)
    return TrainedLDM(ldm, stats)


def generate(run: TrainedLDM, given: dict, num_samples: int, key: jax.Array, settings: SamplerSettings,
             batch_size: int = 64) -> np.ndarray:
    """``num_samples`` images [N, H, W, 3] in [0, 1] given the conditions in ``given`` (the rest are missing)."""
    conditions = jax.device_get(run.stats.conditions.encode(given, num_samples))
    return generate_for_rows(run.ldm, conditions, key, settings, batch_size)


def write_samples(images_NxHxWx3: np.ndarray, output_dir: str, columns: int = 4) -> list[str]:
    """``sample_000.png`` … one file per image, and ``samples.png``: all of them in a grid."""
    n = len(images_NxHxWx3)
    rows = -(-n // columns)
    tiles = np.ones((rows * columns, *images_NxHxWx3.shape[1:]), np.float32)
    tiles[:n] = to_uint8(images_NxHxWx3) / 255.0
    grid = image_grid(tiles.reshape(rows, columns, *images_NxHxWx3.shape[1:]))
    per_sample = {f"sample_{i:03d}.png": functools.partial(save_png, image) for i, image in enumerate(images_NxHxWx3)}
    return plotting.write_samples(output_dir, per_sample, functools.partial(save_png, grid))
