"""The mcLDM job of ``train.py``: images → first-stage autoencoder → latents → conditional U-Net → evaluation.

Workdir layout: ``config.json``, ``stats.json`` (training-split statistics and vocabularies), ``autoencoder/``
(diffusers format: ``config.json`` + safetensors, with the latent scaling measured on the training images; absent
when ``vae.pretrained`` names one), ``latents.npy`` (scaled latents of every table row), ``checkpoints/`` (orbax, the
whole U-Net training state), ``metrics.jsonl`` + ``tensorboard/``, ``eval_curve.jsonl``, ``eval.json`` +
``eval.png``. Every stage is skipped when its output exists and U-Net training resumes from its newest checkpoint, so
running the same command again continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mcjax import diffusion, ldm_sampling, schedules
from mcjax.autoencoder_training import train_autoencoder
from mcjax.batching import fixed_size_batches
from mcjax.compile import run_once
from mcjax.conditions import MASKING_MODES, Conditions
from mcjax.data import images as image_folder
from mcjax.data import render, tables
from mcjax.io import atomic_save_npy, atomic_write_text
from mcjax.latents import encode_images, load_latents, precompute_latents, to_signed_unit
from mcjax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, init_variables
from mcjax.models.autoencoder_kl_weights import from_pretrained, save_pretrained
from mcjax.models.unet import unet_from_config
from mcjax.sampling import read_workdir_file
from mcjax.train import checkpoints, ldm
from mcjax.train.experiment import check_same_run, enable_compilation_cache
from mcjax.train.metrics import MetricWriter, ProgressBar

AUTOENCODER_DIR, LATENTS_FILE = "autoencoder", "latents.npy"


class ImageData(NamedTuple):
    """The split table and one uint8 RGB image per table row (rendered, or read from ``data.image_dir``)."""

    table: tables.TableData
    images_NxHxWx3: np.ndarray


def load_images(config: ml_collections.ConfigDict) -> ImageData:
    """The table, its split, and its images at ``data.image_size``."""
    raw = tables.table_from_config(config.data)
    data = tables.prepare_table(raw, config.data.test_fraction, config.data.split_seed)
    size = int(config.data.image_size)
    if config.data.image_dir:
        column = config.data.index_column
        values = tables.read_csv_columns(config.data.csv_path).get(column)
        if values is None:
            raise ValueError(f"data.index_column {column!r} is not a column of {config.data.csv_path}.")
        source = image_folder.ImageFolderSource(config.data.image_dir, [int(float(v)) for v in values], size)
        images = np.stack([source[i] for i in range(len(source))])
    else:
        images = render.render_cached(raw, size, config.data.render_cache_dir)
    return ImageData(data, images)


def sync_processes(name: str) -> None:
    """Waits for every process of a multi-process run (process 0 writes the shared files, the others read them)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _chunk(configured: int, accelerator_default: int) -> int:
    """Steps per compiled call: as configured, else 1 on CPUs (a host loop beats XLA:CPU's convolutions in loops)."""
    if configured:
        return int(configured)
    return 1 if jax.default_backend() == "cpu" else accelerator_default


def latent_scale(latents: np.ndarray) -> float:
    """1 / std of unscaled latents (of the training images): scales them to unit variance (Rombach et al. 2022,
    4.3.2)."""
    std = float(np.std(latents, dtype=np.float64))
    if not np.isfinite(std) or std <= 0:
        raise FloatingPointError(f"The autoencoder's latents have standard deviation {std}: retrain it.")
    return 1.0 / std


def _train_first_stage(config, images_uint8: np.ndarray, train_rows: np.ndarray, workdir: str) -> None:
    """Trains the KL autoencoder of ``config.autoencoder`` on the training rows' images, then encodes every image
    once: the training rows' latents give the latent scale, saved with the autoencoder to ``W/autoencoder``
    (diffusers format; the folder appears only when complete), and the scaled latents go to ``W/latents.npy``."""
    ae = config.autoencoder
    size = int(config.data.image_size)
    architecture = AutoencoderKLConfig(block_out_channels=tuple(int(c) for c in ae.block_out_channels),
                                       layers_per_block=int(ae.layers_per_block),
                                       latent_channels=int(ae.latent_channels),
                                       norm_num_groups=int(ae.norm_num_groups), sample_size=size,
                                       scaling_factor=1.0)  # until the latents are measured
    if size % architecture.downsampling_factor:
        raise ValueError(f"data.image_size {size} is not divisible by the autoencoder's downsampling factor "
                         f"{architecture.downsampling_factor}.")
    module = AutoencoderKL(architecture)
    key = jax.random.key(int(ae.seed))
    variables = run_once(lambda k: init_variables(module, k), jax.random.fold_in(key, 0))
    progress = ProgressBar(int(ae.steps), "autoencoder steps", enabled=config.train.progress)
    train_images = images_uint8[train_rows]
    print(f"mcjax: training the first-stage autoencoder ({sum(x.size for x in jax.tree.leaves(variables)):,} "
          f"parameters) on {len(train_images)} images of {size} px", flush=True)
    variables, _ = train_autoencoder(
        module, variables, to_signed_unit(train_images), int(ae.steps), int(ae.batch_size), float(ae.learning_rate),
        jax.random.fold_in(key, 1), float(ae.kl_weight), ae.reconstruction, _chunk(ae.steps_per_chunk, 500),
        on_chunk=lambda done, m: progress.update(done, f"loss {float(np.mean(m['loss'])):.4f}"))
    latents = encode_images(module, variables, images_uint8, int(ae.latent_batch_size))
    scale = latent_scale(latents[train_rows])
    out_dir = os.path.join(workdir, AUTOENCODER_DIR)
    tmp_dir = out_dir + ".tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    save_pretrained(dataclasses.replace(architecture, scaling_factor=scale), variables, tmp_dir)
    os.replace(tmp_dir, out_dir)
    atomic_save_npy(os.path.join(workdir, LATENTS_FILE), latents * np.float32(scale))


def first_stage(config, workdir: str, images_uint8: np.ndarray, train_rows: np.ndarray):
    """(module, variables) of the first stage: ``vae.pretrained`` if set, else ``W/autoencoder``, trained here once
    on the training rows' images (with ``W/latents.npy`` of every image)."""
    if config.vae.pretrained:
        return from_pretrained(config.vae.pretrained)
    out_dir = os.path.join(workdir, AUTOENCODER_DIR)
    if not os.path.exists(out_dir):
        if int(config.autoencoder.steps) < 1:
            raise ValueError(f"No first stage: {out_dir} does not exist and autoencoder.steps is 0; set vae.pretrained "
                             f"(e.g. --config.vae.pretrained=/path/to/stable-diffusion-2-1/vae) or autoencoder.steps.")
        if jax.process_index() == 0:
            _train_first_stage(config, images_uint8, train_rows, workdir)
        sync_processes("first stage")
    return from_pretrained(out_dir)


def latents_for(config, workdir: str, module: AutoencoderKL, variables, images_uint8: np.ndarray) -> np.ndarray:
    """Scaled latents (posterior means) of every image, computed once into ``W/latents.npy`` (unless the first stage
    trained here wrote them)."""
    path = os.path.join(workdir, LATENTS_FILE)
    if os.path.exists(path):
        latents = load_latents(path, mmap=False)
        if len(latents) == len(images_uint8):
            return latents
    if jax.process_index() == 0:
        precompute_latents(module, variables, images_uint8, int(config.autoencoder.latent_batch_size), path,
                           progress=config.train.progress)
    sync_processes("latents")
    return load_latents(path, mmap=False)


def make_trainer(config, model) -> ldm.LDMTrainer:
    train = config.train
    if train.masking not in MASKING_MODES:
        raise ValueError(f"train.masking {train.masking!r}; choose from {MASKING_MODES}.")
    for name in ("steps", "batch_size"):
        if int(train[name]) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {train[name]}.")
    if not 0.0 <= float(train.ema_decay) < 1.0:
        raise ValueError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}.")
    optimizer = optax.adamw(float(train.learning_rate), b1=float(train.b1), b2=float(train.b2),
                            weight_decay=float(train.weight_decay))
    noise = diffusion.make_noise_schedule(config.diffusion.schedule, int(config.diffusion.num_timesteps),
                                          float(config.diffusion.beta_start), float(config.diffusion.beta_end))
    weighting = {k: config.diffusion[k] for k in ("loss_weighting", "min_snr_gamma") if k in config.diffusion}
    loss_weights = diffusion.timestep_loss_weights(noise, **weighting)  # older runs' configs lack these: uniform
    return ldm.LDMTrainer(model, noise, optimizer, schedules.schedule_params(config.sparsity), int(train.steps),
                          int(train.batch_size), float(train.ema_decay), train.masking, loss_weights)


def log_metrics(writer: MetricWriter | None, pending: list, step: int) -> float:
    """Writes the mean of the pending steps' metrics; raises on a non-finite loss; returns the mean loss."""
    fetched = jax.device_get(pending)
    metrics = {name: np.concatenate([np.asarray(m[name]).reshape(-1) for m in fetched]) for name in fetched[0]}
    bad = np.flatnonzero(~np.isfinite(metrics["loss"]))
    if bad.size:
        first = step - len(metrics["loss"]) + bad[0]
        raise FloatingPointError(f"U-Net loss is {metrics['loss'][bad[0]]} at step {first}: lower "
                                 f"train.learning_rate or check the data.")
    means = {name: float(np.mean(values)) for name, values in metrics.items()}
    if writer is not None:
        writer.write(step, means)
        writer.summarise(step, means)
    return means["loss"]


def train_unet(config, workdir: str, trainer: ldm.LDMTrainer, data: ldm.LDMData, key: jax.Array,
               on_milestone: Callable[[int, ldm.LDMState], None] | None = None) -> ldm.LDMState:
    """Trains (or resumes) the U-Net on every device; returns the final state (replicated on the mesh).

    ``on_milestone(step, state)`` runs after every ``eval.every_steps`` steps (when set), once that step's
    checkpoint is saved."""
    mesh = ldm.data_mesh()
    init_key, train_key = jax.random.split(key)
    data = ldm.replicate(data, mesh)
    state = ldm.replicate(run_once(lambda k, d: ldm.init_state(trainer, k, d), init_key, data), mesh)
    manager = checkpoints.manager(os.path.join(workdir, "checkpoints"))
    restored = checkpoints.restore_latest(manager, state)
    state = state if restored is None else restored
    done, total = int(state.step), trainer.total_steps
    if done < total:
        params = sum(x.size for x in jax.tree.leaves(state.params))
        print(f"mcjax: U-Net ({params:,} parameters) from step {done} to {total}, batch {trainer.batch_size} on "
              f"{mesh.size} {jax.devices()[0].platform} device(s)", flush=True)
    chunk = _chunk(config.train.steps_per_chunk, 100)
    programs = {}
    log_every = max(int(config.train.log_every_steps), 1)
    checkpoint_every = max(int(config.train.checkpoint_every_steps), 1)
    milestone_every = int(config.eval.get("every_steps", 0))
    if milestone_every < 0:
        raise ValueError(f"eval.every_steps must be >= 0 (0: evaluate at the end only), got {milestone_every}.")
    primary = jax.process_index() == 0  # the process that writes metrics
    writer = MetricWriter(workdir, tensorboard=config.train.tensorboard) if primary else None
    progress = ProgressBar(total, "U-Net steps", enabled=config.train.progress and primary)
    pending = []
    try:
        while done < total:
            num = min(chunk, total - done)
            if milestone_every:  # chunks end on milestones, so each is evaluated at its exact step
                num = min(num, milestone_every - done % milestone_every)
            if num not in programs:
                programs[num] = ldm.compiled_train_steps(trainer, num, mesh)
            state, metrics = programs[num](state, data, train_key)
            pending.append(metrics)  # fetched every log_every steps: no host round trip per step
            before, done = done, done + num
            if done // log_every > before // log_every or done == total:
                loss = log_metrics(writer, pending, done)
                pending = []
                progress.update(done, f"loss {loss:.4f}")
            milestone = bool(milestone_every) and done // milestone_every > before // milestone_every
            if done // checkpoint_every > before // checkpoint_every or done == total or milestone:
                checkpoints.save(manager, done, state)
            if milestone and on_milestone is not None:
                on_milestone(done, state)
    finally:
        manager.close()
        if writer is not None:
            writer.close()
    return state


def conditions_on_host(conditions: Conditions, rows=slice(None)) -> Conditions:
    """The ``rows`` (an index array or a slice; all by default) of ``conditions``, as host arrays."""
    return Conditions(*(np.asarray(a)[rows] for a in conditions))


def run_from_state(model, state: ldm.LDMState, trainer: ldm.LDMTrainer, autoencoder, autoencoder_variables,
                   latent_shape, stats) -> ldm_sampling.LDMRun:
    variables = {"params": state.ema_params, "batch_stats": state.batch_stats}
    return ldm_sampling.LDMRun(model, jax.device_get(variables), autoencoder, autoencoder_variables,
                               trainer.noise_schedule, tuple(int(d) for d in latent_shape), stats)


def sampler_settings(eval_config) -> ldm_sampling.SamplerSettings:
    return ldm_sampling.SamplerSettings(eval_config.sampler, int(eval_config.num_steps), float(eval_config.eta),
                                        float(eval_config.guidance_scale)).validated()


def condition_agreement(train: Conditions, test: Conditions) -> np.ndarray:
    """[test rows, training rows]: on how many conditions each pair agrees (host arrays; a missing numerical value
    agrees with a missing one)."""
    same_cat = test.cat_BxK[:, None, :] == train.cat_BxK[None, :, :]
    a, b = test.num_BxJ[:, None, :], train.num_BxJ[None, :, :]
    same_num = (a == b) | (np.isnan(a) & np.isnan(b))
    return same_cat.sum(-1) + same_num.sum(-1)


def most_similar_training_rows(train: Conditions, test: Conditions) -> tuple[np.ndarray, np.ndarray]:
    """For each test row, the first training row that agrees on the most conditions, and how many it agrees on."""
    agree = condition_agreement(train, test)
    best = np.argmax(agree, axis=1)
    return best, agree[np.arange(len(best)), best]


def retrieval_baseline(images: ImageData, rows: np.ndarray) -> dict:
    """Scores of a generator-free answer: the training image whose conditions agree most with the test row's.

    Bikes with identical conditions still differ in geometry (the keypoints are not conditions), so this bounds what
    image metrics can reward at inference sparsity 0: a faithful conditional sampler scores about as well.
    """
    data = images.table
    test = conditions_on_host(data.test_conditions, rows)
    best, agree = most_similar_training_rows(conditions_on_host(data.train_conditions), test)
    truth = np.asarray(images.images_NxHxWx3[data.test_rows[rows]]) / 255.0
    retrieved = np.asarray(images.images_NxHxWx3[data.train_rows[best]]) / 255.0
    scores = ldm_sampling.image_scores(retrieved, truth)
    summary = {name: float(np.mean(values)) for name, values in scores.items()}
    summary["rows_with_identical_conditions"] = int(np.sum(agree == test.cat_BxK.shape[1] + test.num_BxJ.shape[1]))
    return summary


def _evaluate_test_rows(config, run: ldm_sampling.LDMRun, images: ImageData, levels) -> tuple[dict, np.ndarray, dict]:
    """``ldm_sampling.evaluate`` on the first ``eval.num_rows`` test rows: (summary, their images, generated)."""
    test = images.table
    num_rows = int(config.eval.num_rows) or len(test.test_rows)
    rows = np.arange(min(num_rows, len(test.test_rows)))
    conditions = conditions_on_host(test.test_conditions, rows)
    truth = np.asarray(images.images_NxHxWx3[test.test_rows[rows]])
    summary, generated = ldm_sampling.evaluate(run, truth, conditions, tuple(levels),
                                               jax.random.key(int(config.eval.seed)), sampler_settings(config.eval),
                                               int(config.eval.batch_size))
    return summary, truth, generated


class TrainingCurve:
    """``W/eval_curve.jsonl``: the EMA weights scored at ``eval.curve_sparsity`` on the evaluation's test rows every
    ``eval.every_steps`` steps, one line ``{"step", "inference_sparsity", "mse", "ssim", "psnr"}`` per milestone.

    The last step's point is read from the final evaluation when that scores the curve's levels anyway (same
    weights, rows, masks and noise), rather than generating those images twice."""

    def __init__(self, config, workdir: str, make_run: Callable[[ldm.LDMState], ldm_sampling.LDMRun],
                 images: ImageData):
        self.config, self.make_run, self.images = config, make_run, images
        self.levels = tuple(float(s) for s in config.eval.get("curve_sparsity", (0.0,)))
        self.path = os.path.join(workdir, "eval_curve.jsonl")
        self.final_step = int(config.train.steps)
        self.final_from_evaluation = set(self.levels) <= {float(s) for s in config.eval.inference_sparsity}
        self.final_pending = False  # the last milestone was reached in this call, its point not yet written

    def at_milestone(self, step: int, state: ldm.LDMState) -> None:
        """``on_milestone`` for ``train_unet``."""
        if jax.process_index() != 0:
            return
        if step == self.final_step and self.final_from_evaluation:
            self.final_pending = True
            return
        summary, _, _ = _evaluate_test_rows(self.config, self.make_run(state), self.images, self.levels)
        self._append(step, summary)

    def after_evaluation(self, summary: dict) -> None:
        """Writes the last step's point from the final evaluation's ``summary`` when it was left for it."""
        if self.final_pending:
            self._append(self.final_step, summary)
            self.final_pending = False

    def _append(self, step: int, summary: dict) -> None:
        index = [summary["inference_sparsity"].index(level) for level in self.levels]
        line = {"step": step, "inference_sparsity": list(self.levels),
                **{name: [summary[name][i] for i in index] for name in ("mse", "ssim", "psnr")}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        scores = ", ".join(f"s={s:g}: SSIM {q:.4f}" for s, q in zip(self.levels, line["ssim"]))
        print(f"mcjax: step {step}: {scores}", flush=True)


def evaluate_run(config, workdir: str, run: ldm_sampling.LDMRun, images: ImageData) -> dict:
    """Generates test images at every inference sparsity level, writes eval.json and eval.png, prints the table."""
    started = time.perf_counter()
    summary, truth, generated = _evaluate_test_rows(config, run, images, config.eval.inference_sparsity)
    summary["sampler"] = dict(config.eval.to_dict(), num_rows=len(truth))
    summary["eval_seconds"] = round(time.perf_counter() - started, 1)
    summary["retrieval_baseline"] = retrieval_baseline(images, np.arange(len(truth)))
    ldm_sampling.write_eval(summary, truth, generated, workdir, int(config.eval.grid_rows))
    print(ldm_sampling.format_table(summary), flush=True)
    baseline = summary["retrieval_baseline"]
    print(f"retrieval baseline (the training image with the most agreeing conditions): MSE {baseline['mse']:.5f}, "
          f"SSIM {baseline['ssim']:.4f}, PSNR {baseline['psnr']:.2f} dB", flush=True)
    return summary


def _start_workdir(config, workdir: str, stats: tables.TableStats) -> None:
    os.makedirs(workdir, exist_ok=True)
    check_same_run(workdir, config)
    if jax.process_index() == 0:
        atomic_write_text(os.path.join(workdir, "config.json"), config.to_json(indent=1))
        atomic_write_text(os.path.join(workdir, "stats.json"), stats.to_json())
    sync_processes("workdir")



def train_ldm(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The whole mcLDM pipeline (see the module docstring); returns eval.json's content."""
    enable_compilation_cache(config.get("compilation_cache_dir", ""))
    started = time.perf_counter()
    images = load_images(config)
    data = images.table
    _start_workdir(config, workdir, data.stats)
    autoencoder, ae_variables = first_stage(config, workdir, images.images_NxHxWx3, data.train_rows)
    latents = latents_for(config, workdir, autoencoder, ae_variables, images.images_NxHxWx3)
    spec = data.stats.conditions
    model = unet_from_config(config.model, spec, latents.shape[-1])
    trainer = make_trainer(config, model)
    train_data = ldm.LDMData(jnp.asarray(latents[data.train_rows]),
                             jax.tree.map(jnp.asarray, data.train_conditions))
    make_run = functools.partial(run_from_state, model, trainer=trainer, autoencoder=autoencoder,
                                 autoencoder_variables=ae_variables, latent_shape=latents.shape[1:], stats=data.stats)
    curve = TrainingCurve(config, workdir, make_run, images)
    state = train_unet(config, workdir, trainer, train_data, jax.random.key(int(config.train.seed)),
                       curve.at_milestone)
    print(f"mcjax: trained in {time.perf_counter() - started:.1f}s", flush=True)
    if jax.process_index() != 0:
        return {}  # process 0 evaluates and writes eval.json
    summary = evaluate_run(config, workdir, make_run(state), images)
    curve.after_evaluation(summary)
    return summary


def train_first_stage_only(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """``configs/geobiked_autoencoder.py``: trains the first stage into ``W/autoencoder`` and scores its
    reconstructions of test images (eval.json: mse, ssim, psnr; eval.png: originals above reconstructions)."""
    enable_compilation_cache(config.get("compilation_cache_dir", ""))
    images = load_images(config)
    data = images.table
    _start_workdir(config, workdir, data.stats)
    module, variables = first_stage(config, workdir, images.images_NxHxWx3, data.train_rows)
    rows = data.test_rows[: int(config.eval.num_rows) or len(data.test_rows)]
    truth = np.asarray(images.images_NxHxWx3[rows])
    reconstruct = jax.jit(lambda v, x: jnp.clip((module.apply(v, x)[0] + 1.0) / 2.0, 0.0, 1.0))
    batches = fixed_size_batches(truth, min(int(config.eval.batch_size), len(truth)))
    reconstructed = np.concatenate([np.asarray(reconstruct(variables, to_signed_unit(batch)))[:num_real]
                                    for batch, num_real in batches])
    scores = ldm_sampling.image_scores(reconstructed, truth / 255.0)
    summary = {name: float(np.mean(values)) for name, values in scores.items()}
    summary.update(num_rows=len(rows), latent_scale=float(module.config.scaling_factor))
    ldm_sampling.write_eval(summary, truth, {0.0: reconstructed}, workdir, 8)
    print(f"autoencoder reconstructions of {len(rows)} test images: MSE {summary['mse']:.5f}, "
          f"SSIM {summary['ssim']:.4f}, PSNR {summary['psnr']:.2f} dB", flush=True)
    return summary


def load_ldm_run(workdir: str) -> ldm_sampling.LDMRun:
    """The trained mcLDM in ``workdir`` (its newest checkpoint), for sampling."""
    config = ml_collections.ConfigDict(json.loads(read_workdir_file(workdir, "config.json")))
    if config.get("model_type") != "ldm":
        raise ValueError(f"{workdir} holds no mcLDM run (model_type {config.get('model_type', 'vae')!r}).")
    stats = tables.TableStats.from_json(read_workdir_file(workdir, "stats.json"))
    autoencoder, ae_variables = from_pretrained(config.vae.pretrained or os.path.join(workdir, AUTOENCODER_DIR))
    latents = load_latents(os.path.join(workdir, LATENTS_FILE))
    model = unet_from_config(config.model, stats.conditions, latents.shape[-1])
    trainer = make_trainer(config, model)
    sample = ldm.LDMData(jnp.zeros((1, *latents.shape[1:]), jnp.float32),
                         jax.tree.map(jnp.asarray, stats.conditions.encode({})))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # any device count may have saved it
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                            jax.eval_shape(lambda k: ldm.init_state(trainer, k, sample), jax.random.key(0)))
    manager = checkpoints.manager(os.path.join(workdir, "checkpoints"))
    state = checkpoints.restore_latest(manager, abstract)
    manager.close()
    if state is None:
        raise FileNotFoundError(f"No U-Net checkpoint in {workdir}/checkpoints: train the run first.")
    return run_from_state(model, state, trainer, autoencoder, ae_variables, latents.shape[1:], stats)
