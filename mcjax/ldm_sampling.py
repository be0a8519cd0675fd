"""Images from a trained mcLDM: sampling with any subset of the conditions, evaluation against ground truth, PNGs.

A generated image is: x_T ~ N(0, I) → DDIM or DDPM with the U-Net's EMA weights (classifier-free guidance optional,
"unconditional" = every condition masked) → latents → the first-stage decoder → RGB in [0, 1]. The whole chain is
one compiled program per batch shape; weights are arguments, never constants folded into it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax import conditions as cond_lib
from mcjax import diffusion, image_metrics
from mcjax.batching import fixed_size_batches
from mcjax.data.tables import TableStats
from mcjax.models.autoencoder_kl import AutoencoderKL, decode_from_latents
from mcjax.models.unet import ConditionalUNet, all_missing

SAMPLERS = ("ddim", "ddpm")


class SamplerSettings(NamedTuple):
    """How to sample: ``ddim`` (``num_steps``, ``eta``) or ``ddpm`` (all T steps); guidance scale s in
    eps_u + s (eps_c - eps_u), where s = 1 is the plain conditional prediction (no unconditional pass).

    The defaults are the mcLDM config's: DDIM over 100 steps with eta = 1 (fresh noise at every step) scored higher
    SSIM than 50 deterministic steps on GeoBiked (README.md: sampler settings)."""

    sampler: str = "ddim"
    num_steps: int = 100
    eta: float = 1.0
    guidance_scale: float = 1.0

    def validated(self) -> "SamplerSettings":
        if self.sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {self.sampler!r}; choose from {SAMPLERS}.")
        if self.guidance_scale < 0:
            raise ValueError(f"The guidance scale must be >= 0 (1 = no guidance), got {self.guidance_scale}.")
        if self.sampler == "ddim" and not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {self.eta}.")
        return self


DEFAULT_SETTINGS = SamplerSettings()


@dataclasses.dataclass(frozen=True)
class LDMRun:
    """A trained mcLDM: the U-Net with its (EMA) variables, the first stage, the noise schedule and the statistics
    that encode conditions."""

    unet: ConditionalUNet
    unet_variables: Any  # {"params": EMA params, "batch_stats": ...}
    autoencoder: AutoencoderKL
    autoencoder_variables: Any
    noise_schedule: diffusion.NoiseSchedule
    latent_shape: tuple[int, int, int]  # h, w, channels
    stats: TableStats


def _sample(unet: ConditionalUNet, autoencoder: AutoencoderKL, latent_shape, settings: SamplerSettings,
            unet_variables, autoencoder_variables, schedule, conditions, key):
    batch = conditions.cat_BxK.shape[0]
    shape = (batch, *latent_shape)

    def denoise(x_t, t_B, c):
        return unet.apply(unet_variables, x_t, t_B, c)

    scale = settings.guidance_scale
    unconditional = None if scale == 1 else all_missing(unet.num_categories, unet.num_numerical, batch)
    if settings.sampler == "ddim":
        latents = diffusion.ddim_sample(schedule, denoise, shape, conditions, unconditional, key, settings.num_steps,
                                        settings.eta, scale)
    else:
        latents = diffusion.ddpm_sample(schedule, denoise, shape, conditions, unconditional, key, scale)
    images = decode_from_latents(autoencoder, autoencoder_variables, latents)
    return jnp.clip((images.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _compiled_sampler(unet, autoencoder, latent_shape, settings: SamplerSettings):
    return jax.jit(functools.partial(_sample, unet, autoencoder, latent_shape, settings))


def generate_images(run: LDMRun, conditions: cond_lib.Conditions, key: jax.Array,
                    settings: SamplerSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """Images [B, H, W, 3] in [0, 1] for a batch of encoded (possibly masked) conditions."""
    sample = _compiled_sampler(run.unet, run.autoencoder, run.latent_shape, settings.validated())
    return np.asarray(sample(run.unet_variables, run.autoencoder_variables, run.noise_schedule,
                             jax.tree.map(jnp.asarray, conditions), key))


def generate_for_rows(run: LDMRun, conditions: cond_lib.Conditions, key: jax.Array, settings: SamplerSettings,
                      batch_size: int) -> np.ndarray:
    """Images for every row of ``conditions`` (host arrays), in fixed-size batches; row i's noise is drawn from
    ``fold_in(key, i // batch_size)`` whatever the conditions, so levels of an evaluation share their x_T."""
    batches = fixed_size_batches(conditions, min(batch_size, len(conditions.cat_BxK)))
    return np.concatenate([generate_images(run, batch, jax.random.fold_in(key, index), settings)[:num_real]
                           for index, (batch, num_real) in enumerate(batches)])


def image_scores(generated_NxHxWx3: np.ndarray, truth_NxHxWx3: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image MSE, SSIM and PSNR of generated images against the ground truth (both in [0, 1])."""
    a, b = jnp.asarray(generated_NxHxWx3, jnp.float32), jnp.asarray(truth_NxHxWx3, jnp.float32)
    return {"mse": np.asarray(image_metrics.mse(a, b)), "ssim": np.asarray(image_metrics.ssim(a, b)),
            "psnr": np.asarray(image_metrics.psnr(a, b))}


def _level_key(key: jax.Array, level: float) -> jax.Array:
    """The key of inference sparsity ``level``, from the level's value (to 1e-6) rather than its position."""
    return jax.random.fold_in(key, round(float(level) * 1_000_000))


def evaluate(run: LDMRun, truth_NxHxWx3: np.ndarray, conditions: cond_lib.Conditions, levels, key: jax.Array,
             settings: SamplerSettings, batch_size: int) -> tuple[dict, dict[float, np.ndarray]]:
    """The paper's Figure 2 / Table 4 protocol: each row's conditions masked at each inference sparsity level
    (per condition, independently), one image generated per row and level, scored against the row's image.

    Returns (summary with per-level lists ``mse``, ``ssim``, ``psnr`` and their standard deviations over rows,
    {level: generated images}). A level's masks are drawn from the level itself, so a level scores the same whichever
    other levels are evaluated with it; the starting noise of a row is the same at every level.
    """
    mask_key, noise_key = jax.random.split(key)
    truth = np.asarray(truth_NxHxWx3, np.float32) / (255.0 if truth_NxHxWx3.dtype == np.uint8 else 1.0)
    summary = {"inference_sparsity": [float(s) for s in levels], "num_rows": len(truth)}
    for name in ("mse", "ssim", "psnr"):
        summary[name], summary[f"{name}_std"] = [], []
    generated = {}
    for level in levels:
        masked = cond_lib.mask_conditions(_level_key(mask_key, level), jax.tree.map(jnp.asarray, conditions),
                                          jnp.float32(level))
        images = generate_for_rows(run, jax.tree.map(np.asarray, masked), noise_key, settings, batch_size)
        generated[float(level)] = images
        for name, values in image_scores(images, truth).items():
            summary[name].append(float(np.mean(values)))
            summary[f"{name}_std"].append(float(np.std(values)))
    return summary, generated


def format_table(summary: dict) -> str:
    lines = ["inference sparsity   MSE       SSIM     PSNR (dB)"]
    for s, m, q, p in zip(summary["inference_sparsity"], summary["mse"], summary["ssim"], summary["psnr"]):
        lines.append(f"{s:>18.1f}   {m:.5f}   {q:.4f}   {p:.2f}")
    return "\n".join(lines)


def to_uint8(images_NxHxWx3: np.ndarray) -> np.ndarray:
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


def write_eval(summary: dict, truth_NxHxWx3: np.ndarray, generated: dict[float, np.ndarray], workdir: str,
               grid_rows: int) -> list[str]:
    """``eval.json`` and ``eval.png`` (a row per test image: ground truth, then one image per sparsity level)."""
    from mcjax.io import atomic_write_text

    json_path = os.path.join(workdir, "eval.json")
    atomic_write_text(json_path, json.dumps(summary, indent=1))
    shown = min(grid_rows, len(truth_NxHxWx3))
    columns = [to_uint8(truth_NxHxWx3[:shown])] + [to_uint8(generated[s][:shown]) for s in sorted(generated)]
    png_path = save_png(image_grid(np.stack(columns, axis=1)), os.path.join(workdir, "eval.png"))
    return [json_path, png_path]


def write_samples(images_NxHxWx3: np.ndarray, output_dir: str, columns: int = 4) -> list[str]:
    """``sample_000.png`` … one file per image, and ``samples.png``: all of them in a grid."""
    os.makedirs(output_dir, exist_ok=True)
    paths = [save_png(image, os.path.join(output_dir, f"sample_{i:03d}.png")) for i, image in enumerate(images_NxHxWx3)]
    n = len(images_NxHxWx3)
    rows = -(-n // columns)
    tiles = np.ones((rows * columns, *images_NxHxWx3.shape[1:]), np.float32)
    tiles[:n] = to_uint8(images_NxHxWx3) / 255.0
    grid = image_grid(tiles.reshape(rows, columns, *images_NxHxWx3.shape[1:]))
    return paths + [save_png(grid, os.path.join(output_dir, "samples.png"))]
