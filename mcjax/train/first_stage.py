"""The mcLDM's first stage: a KL autoencoder (pretrained, or trained here on the training images) and the scaled
latents of every image, each computed once into the workdir.

``W/autoencoder`` holds a first stage trained here (diffusers format: ``config.json`` + safetensors, with the latent
scaling measured on the training images); ``W/latents.npy`` the scaled latents (posterior means) of every table row,
encoded batch by batch from images decoded on the fly, and ``W/latents.key`` what they were made from. Each appears
only when complete, so a run that stops midway redoes the missing one and no more, and changed images are re-encoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

import jax
import numpy as np

from mcjax import run_dir
from mcjax.compile import run_once
from mcjax.data.images import content_key, image_batches, to_signed_unit
from mcjax.errors import InputError
from mcjax.io import atomic_write_text
from mcjax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, init_variables
from mcjax.models.autoencoder_kl_weights import from_pretrained, save_pretrained
from mcjax.train.autoencoder import train_autoencoder
from mcjax.train.latents import encode_images, load_latents, precompute_latents
from mcjax.train.metrics import ProgressBar

AUTOENCODER_DIR, LATENTS_FILE, LATENTS_KEY_FILE = "autoencoder", "latents.npy", "latents.key"


def latent_scale(latents: np.ndarray) -> float:
    """1 / std of unscaled latents (of the training images): scales them to unit variance (Rombach et al. 2022,
    4.3.2)."""
    std = float(np.std(latents, dtype=np.float64))
    if not np.isfinite(std) or std <= 0:
        raise FloatingPointError(f"The autoencoder's latents have standard deviation {std}: retrain it.")
    return 1.0 / std


def architecture(config) -> AutoencoderKLConfig:
    """The AutoencoderKL of ``config.first_stage`` for images of ``data.image_size`` (latent scale still 1)."""
    stage, size = config.first_stage, int(config.data.image_size)
    arch = AutoencoderKLConfig(block_out_channels=tuple(int(c) for c in stage.block_out_channels),
                               layers_per_block=int(stage.layers_per_block),
                               latent_channels=int(stage.latent_channels), norm_num_groups=int(stage.norm_num_groups),
                               sample_size=size, scaling_factor=1.0)
    if size % arch.downsampling_factor:
        raise InputError(f"data.image_size {size} is not divisible by the first stage's downsampling factor "
                         f"{arch.downsampling_factor}.")
    return arch


def training_sample(config, train_rows: np.ndarray) -> np.ndarray:
    """The training rows the first stage learns from: all of them, or a seeded ``first_stage.max_train_images`` of
    them, which bounds the host memory this stage needs however large the image set."""
    limit = int(config.first_stage.max_train_images)
    if not limit or limit >= len(train_rows):
        return train_rows
    chosen = np.random.default_rng(int(config.first_stage.seed)).choice(len(train_rows), limit, replace=False)
    return np.sort(train_rows[chosen])


def train_first_stage(config, images_uint8, train_rows: np.ndarray, workdir: str) -> None:
    """Trains the KL autoencoder of ``config.first_stage`` on the training rows' images (``training_sample``) and
    saves it to ``W/autoencoder`` with the latent scale measured on the latents of those images."""
    stage = config.first_stage
    arch = architecture(config)
    module = AutoencoderKL(arch)
    key = jax.random.key(int(stage.seed))
    variables = run_once(lambda k: init_variables(module, k), jax.random.fold_in(key, 0))
    train_images = np.asarray(images_uint8[training_sample(config, train_rows)])
    print(f"mcjax: training the first-stage autoencoder ({sum(x.size for x in jax.tree.leaves(variables)):,} "
          f"parameters) on {len(train_images)} images of {arch.sample_size} px", flush=True)
    variables, _ = train_autoencoder(
        module, variables, to_signed_unit(train_images), int(stage.steps), int(stage.batch_size),
        float(stage.learning_rate), jax.random.fold_in(key, 1), float(stage.kl_weight), stage.reconstruction,
        int(stage.steps_per_chunk), ProgressBar(int(stage.steps), "autoencoder steps", config.train.progress))
    scale = latent_scale(encode_images(module, variables, train_images, int(stage.latent_batch_size)))
    out_dir = os.path.join(workdir, AUTOENCODER_DIR)
    tmp_dir = out_dir + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    save_pretrained(dataclasses.replace(arch, scaling_factor=scale), variables, tmp_dir)
    os.replace(tmp_dir, out_dir)


def weights_path(config, workdir: str) -> str:
    """Where the run's first stage lives: ``first_stage.pretrained``, or ``W/autoencoder``."""
    return config.first_stage.pretrained or os.path.join(workdir, AUTOENCODER_DIR)


def first_stage(config, workdir: str, images_uint8, train_rows: np.ndarray):
    """(module, variables) of the first stage: ``first_stage.pretrained`` if set, else ``W/autoencoder``, trained here
    once on the training rows' images."""
    path = weights_path(config, workdir)
    if not config.first_stage.pretrained and not os.path.exists(path):
        if int(config.first_stage.steps) < 1:
            raise InputError(f"No first stage: {path} does not exist and first_stage.steps is 0; set "
                             f"first_stage.pretrained to a diffusers AutoencoderKL folder (e.g. the vae/ of "
                             f"stable-diffusion-2-1) or first_stage.steps to train one.")
        if jax.process_index() == 0:
            train_first_stage(config, images_uint8, train_rows, workdir)
        run_dir.sync_processes("first stage")
    return from_pretrained(path)


def _identity(path: str) -> list:
    """What a first stage is: each of its files' name, size and modification time (or a hub id as given)."""
    if not os.path.exists(path):
        return [path]
    root = os.path.realpath(path)
    files = [root] if os.path.isfile(root) else sorted(
        os.path.join(d, name) for d, _, names in os.walk(root) for name in names)
    return [root] + [[os.path.relpath(f, root), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files]


def latents_key(config, workdir: str, images_uint8) -> str:
    """The content ``W/latents.npy`` was made from: the images (``content_key``) and the first stage."""
    text = json.dumps([content_key(images_uint8), _identity(weights_path(config, workdir))])
    return hashlib.sha256(text.encode()).hexdigest()


def latents_for(config, workdir: str, module: AutoencoderKL, variables, images_uint8) -> np.ndarray:
    """Scaled latents (posterior means) of every image, memory-mapped from ``W/latents.npy``. They are encoded in
    batches of ``first_stage.latent_batch_size`` and trusted again only while ``W/latents.key`` matches the
    images and the first stage (a changed image file or first stage recomputes them)."""
    path, key_path = os.path.join(workdir, LATENTS_FILE), os.path.join(workdir, LATENTS_KEY_FILE)
    key = latents_key(config, workdir, images_uint8)
    cached = os.path.exists(path) and os.path.exists(key_path) and run_dir.read_text(workdir, LATENTS_KEY_FILE) == key
    if not cached and jax.process_index() == 0:
        if os.path.exists(key_path):
            os.remove(key_path)  # first, so a crash below never leaves a key beside other latents
        batch_size = int(config.first_stage.latent_batch_size)
        precompute_latents(module, variables, image_batches(images_uint8, batch_size), batch_size, path,
                           progress=config.train.progress)
        atomic_write_text(key_path, key)
    run_dir.sync_processes("latents")
    return load_latents(path)
