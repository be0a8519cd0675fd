"""The mcLDM job of ``train.py``: images → first stage → latents → conditional U-Net → inference bundle → evaluation.

Only the order of the stages lives here. Workdir (besides ``mcjax.run_dir``'s): ``autoencoder/``, ``latents.npy``
and ``latents.key`` (``mcjax.train.first_stage``), ``checkpoints/`` (the whole U-Net training state),
``judge/`` (the condition judge, ``mcjax.train.judge``), ``eval_curve.jsonl``, ``eval.json`` + ``eval.png`` (+
``eval_control.png`` with a judge). Every stage is skipped when its output exists and U-Net training
resumes from its newest checkpoint, so running the same command again continues where it stopped.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mcjax import run_dir
from mcjax.data.images import ImageData, load_images
from mcjax.eval import ldm as evaluation
from mcjax.models.ldm import LDM, unet_from_config
from mcjax.train import first_stage, ldm
from mcjax.train.judge import condition_judge


def ldm_from_state(unet, state: ldm.LDMState, trainer: ldm.LDMTrainer, autoencoder, autoencoder_variables,
                   latent_shape) -> LDM:
    """The mcLDM with the state's EMA weights (host copies)."""
    variables = jax.device_get({"params": state.ema_params, "batch_stats": state.batch_stats})
    return LDM(unet, variables, autoencoder, autoencoder_variables, trainer.noise_schedule,
               tuple(int(d) for d in latent_shape))


def export(config: ml_collections.ConfigDict, workdir: str, trained: LDM, stats_json: str) -> None:
    """The inference bundle: the U-Net's EMA weights and batch statistics, the latent shape and where the first stage
    lives (``mcjax.generate.ldm.load_ldm_run`` reads it)."""
    pretrained = config.first_stage.pretrained
    location = {"in_workdir": not pretrained, "path": pretrained or first_stage.AUTOENCODER_DIR}
    run_dir.write_bundle(workdir, "ldm", {"latent_shape": list(trained.latent_shape), "first_stage": location},
                         {"unet": trained.unet_variables}, config, stats_json)


def training_latents(config, latents_NxhxwxC: np.ndarray, train_rows: np.ndarray,
                     conditions) -> ldm.LDMData | ldm.StreamedData:
    """The training rows' latents and ``conditions``: read from the memory-mapped file onto the device for the whole
    run up to ``data.max_device_latent_bytes``, beyond it left in the memory map and streamed from the host in
    batches (``mcjax.train.ldm.StreamedData``; the same training, a host gather per chunk)."""
    needed = len(train_rows) * int(np.prod(latents_NxhxwxC.shape[1:])) * latents_NxhxwxC.dtype.itemsize
    limit = int(config.data.max_device_latent_bytes)
    if needed > limit:
        print(f"mcjax: the training latents ({needed / 2**30:.2f} GiB) exceed data.max_device_latent_bytes "
              f"({limit / 2**30:.2f} GiB): streamed from the host", flush=True)
        return ldm.StreamedData(latents_NxhxwxC, np.asarray(train_rows), conditions)
    return ldm.LDMData(jnp.asarray(latents_NxhxwxC[train_rows]), jax.tree.map(jnp.asarray, conditions))


def _start(config, workdir: str) -> ImageData:
    images = load_images(config.data)
    run_dir.start(workdir, config, images.table.stats.to_json())
    print(f"mcjax: {len(images.table.train_rows)} train / {len(images.table.test_rows)} test images; "
          f"{images.table.stats.label_rate_text()}", flush=True)
    return images


def train_ldm(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The whole mcLDM pipeline (see the module docstring); returns eval.json's content."""
    started = time.perf_counter()
    images = _start(config, workdir)
    data = images.table
    autoencoder, ae_variables = first_stage.first_stage(config, workdir, images.images_NxHxWx3, data.train_rows)
    latents = first_stage.latents_for(config, workdir, autoencoder, ae_variables, images.images_NxHxWx3)
    unet = unet_from_config(config.model, data.stats.conditions, latents.shape[-1])
    trainer = ldm.make_trainer(config, unet, data.stats.label_rates)
    train_data = training_latents(config, latents, data.train_rows, data.train_conditions)
    make_ldm = functools.partial(ldm_from_state, unet, trainer=trainer, autoencoder=autoencoder,
                                 autoencoder_variables=ae_variables, latent_shape=latents.shape[1:])
    judging = None
    if jax.process_index() == 0:  # process 0 evaluates
        judging = evaluation.judging_for(condition_judge(config, workdir, images), images,
                                         evaluation.evaluation_rows(config, images)[1], int(config.eval.batch_size))
    curve = evaluation.TrainingCurve(config, workdir, make_ldm, images, judging)
    state = ldm.train_unet(config, workdir, trainer, train_data, jax.random.key(int(config.train.seed)),
                           curve.at_milestone)
    print(f"mcjax: trained in {time.perf_counter() - started:.1f}s", flush=True)
    trained = make_ldm(state)
    export(config, workdir, trained, data.stats.to_json())
    if jax.process_index() != 0:
        return {}  # process 0 evaluates and writes eval.json
    summary = evaluation.evaluate_and_write(config, workdir, trained, images, judging)
    curve.after_evaluation(summary)
    return summary


def train_first_stage(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """``configs/geobiked_first_stage.py``: trains the first stage into ``W/autoencoder`` and scores its
    reconstructions of test images (eval.json: mse, ssim, psnr; eval.png: originals above reconstructions)."""
    images = _start(config, workdir)
    module, variables = first_stage.first_stage(config, workdir, images.images_NxHxWx3, images.table.train_rows)
    return evaluation.score_reconstructions(config, workdir, module, variables, images)
