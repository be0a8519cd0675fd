"""The inference bundle of a finished run whose workdir has none (trained before bundles existed), written from the
workdir's config and newest checkpoints: ``export_run(workdir)``, or ``python train.py --export --workdir W``."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mcjax import run_dir
from mcjax.data.tables import TableStats
from mcjax.errors import InputError
from mcjax.models.autoencoder_kl_weights import from_pretrained
from mcjax.models.ldm import unet_from_config
from mcjax.train import first_stage, ldm, ldm_pipeline, sweep


def export_run(workdir: str) -> str:
    """Writes ``W/inference`` for the finished mcVAE or mcLDM run in ``workdir``; returns its path."""
    config = run_dir.read_config(workdir)
    if config.job == "mcvae":
        sweep.export(config, workdir, sweep.train(config, workdir))  # finished stages are only restored
    elif config.job == "ldm":
        _export_ldm(config, workdir)
    else:
        raise InputError(f"{workdir} holds a {config.job!r} run, which has no inference bundle.")
    return os.path.join(workdir, run_dir.BUNDLE)


def restore_unet(config: ml_collections.ConfigDict, workdir: str, stats, latent_shape) -> ldm.LDMState | None:
    """The newest U-Net checkpoint of ``workdir`` on one device (any device count may have saved it), or None."""
    unet = unet_from_config(config.model, stats.conditions, latent_shape[-1])
    trainer = ldm.make_trainer(config, unet)
    sample = ldm.LDMData(jnp.zeros((1, *latent_shape), jnp.float32),
                         jax.tree.map(jnp.asarray, stats.conditions.encode({})))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                            jax.eval_shape(lambda k: ldm.init_state(trainer, k, sample), jax.random.key(0)))
    manager = run_dir.checkpoint_manager(os.path.join(workdir, run_dir.CHECKPOINTS))
    try:
        return run_dir.restore_latest(manager, abstract)
    finally:
        manager.close()


def _export_ldm(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The inference bundle of a finished mcLDM run, from its newest checkpoint (for workdirs trained before bundles
    existed)."""
    stats = TableStats.from_json(run_dir.read_text(workdir, run_dir.STATS))
    latent_shape = np.load(os.path.join(workdir, first_stage.LATENTS_FILE), mmap_mode="r").shape[1:]
    state = restore_unet(config, workdir, stats, latent_shape)
    if state is None:
        raise FileNotFoundError(f"No U-Net checkpoint in {workdir}/{run_dir.CHECKPOINTS}: train the run first.")
    autoencoder, variables = from_pretrained(first_stage.weights_path(config, workdir))
    unet = unet_from_config(config.model, stats.conditions, latent_shape[-1])
    trained = ldm_pipeline.ldm_from_state(unet, state, ldm.make_trainer(config, unet), autoencoder, variables,
                                          latent_shape)
    ldm_pipeline.export(config, workdir, trained, stats.to_json())
