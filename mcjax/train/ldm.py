"""Training the mcLDM denoiser: one pure step, scanned over chunks of steps, data-parallel over a device mesh.

The latents (or images) and their conditions live on the devices; each step draws its batch rows, condition masks,
timesteps, noise and dropout from ``fold_in(key, step)``, so a resumed run continues exactly. The global batch is
sharded over the mesh's ``data`` axis and the parameters are replicated: the same program runs on one CPU or on N
accelerators (XLA inserts the gradient all-reduce; batch norm sees the global batch), and with
``jax.distributed.initialize()`` on several hosts.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mcjax import conditions as cond_lib
from mcjax import diffusion, run_dir, schedules
from mcjax.compile import run_once
from mcjax.errors import InputError
from mcjax.models.ldm import UNet, noise_schedule
from mcjax.train import loop
from mcjax.train.metrics import MetricWriter, ProgressBar

DATA_AXIS = "data"


class LDMTrainer(NamedTuple):
    """Everything static about the training program."""

    model: UNet
    noise_schedule: diffusion.NoiseSchedule
    optimizer: optax.GradientTransformation
    sparsity: schedules.ScheduleParams  # condition sparsity p_t per step (the paper: linear 0.1 -> 0.25)
    total_steps: int
    batch_size: int  # global batch, divisible by the number of devices
    ema_decay: float
    masking: str = "per_condition"  # see mcjax.conditions.MASKING_MODES
    loss_weights: jax.Array | None = None  # [T] ε-MSE weight per timestep (diffusion.timestep_loss_weights); None: 1
    sparsity_target: str = "observed"  # see mcjax.conditions.label_drop_probability
    label_rates: tuple[float, ...] = ()  # per condition, the training split's (sparsity_target "total")


class LDMState(NamedTuple):
    step: jax.Array
    params: Any
    batch_stats: Any
    ema_params: Any  # exponential moving average of params, used for sampling
    opt_state: Any


class LDMData(NamedTuple):
    """The training set on device: x0 [N, h, w, c] (latents or images) and its conditions."""

    x0_NxHxWxC: jax.Array
    conditions: cond_lib.Conditions


def make_trainer(config, model: UNet, label_rates: tuple[float, ...] = ()) -> LDMTrainer:
    """The training program of a config's ``train``, ``diffusion`` and ``sparsity`` blocks; ``label_rates`` (per
    condition, the training split's) serve ``train.sparsity_target = "total"``."""
    train = config.train
    cond_lib.validate_masking(train.masking, train.sparsity_target)
    for name in ("steps", "batch_size"):
        if int(train[name]) < 1:
            raise InputError(f"train.{name} must be >= 1, got {train[name]}.")
    if not 0.0 <= float(train.ema_decay) < 1.0:
        raise InputError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}.")
    optimizer = optax.adamw(float(train.learning_rate), b1=float(train.b1), b2=float(train.b2),
                            weight_decay=float(train.weight_decay))
    noise = noise_schedule(config.diffusion)
    weighting = {k: config.diffusion[k] for k in ("loss_weighting", "min_snr_gamma") if k in config.diffusion}
    loss_weights = diffusion.timestep_loss_weights(noise, **weighting)  # older runs' configs lack these: uniform
    return LDMTrainer(model, noise, optimizer, schedules.schedule_params(config.sparsity), int(train.steps),
                      int(train.batch_size), float(train.ema_decay), train.masking, loss_weights,
                      train.sparsity_target, tuple(label_rates))


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh over all devices (of every host after ``jax.distributed.initialize()``)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def init_state(trainer: LDMTrainer, key: jax.Array, data: LDMData) -> LDMState:
    sample = jax.tree.map(lambda a: a[:1], data)
    variables = trainer.model.init({"params": key, "dropout": key}, sample.x0_NxHxWxC, jnp.zeros((1,), jnp.int32),
                                   sample.conditions)
    params = variables["params"]
    # The EMA starts as a copy: its own buffers, so the state can be donated.
    return LDMState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), jax.tree.map(jnp.copy, params),
                    trainer.optimizer.init(params))


def loss_fn(params, batch_stats, trainer: LDMTrainer, x0_BxHxWxC, conditions, p, key):
    """ε-prediction MSE (weighted per timestep if the trainer says so) on conditions whose observed labels are masked
    with probability p (scalar or per condition); returns (loss, new batch statistics)."""
    mask_key, noise_key, dropout_key = jax.random.split(key, 3)
    masked = cond_lib.mask_conditions(mask_key, conditions, p, trainer.masking)
    x_t, t_B, noise = diffusion.noised_batch(trainer.noise_schedule, x0_BxHxWxC, noise_key)
    eps, updates = trainer.model.apply({"params": params, "batch_stats": batch_stats}, x_t, t_B, masked, train=True,
                                       rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    return diffusion.epsilon_mse(eps, noise, t_B, trainer.loss_weights), updates["batch_stats"]


def train_step(trainer: LDMTrainer, state: LDMState, data: LDMData, key: jax.Array, batch_sharding=None):
    """One AdamW step on a batch drawn from ``fold_in(key, step)``; returns the new state and metrics."""
    step_key = jax.random.fold_in(key, state.step)
    rows_key, loss_key = jax.random.split(step_key)
    rows = jax.random.randint(rows_key, (trainer.batch_size,), 0, data.x0_NxHxWxC.shape[0])
    batch = jax.tree.map(lambda a: a[rows], data)
    if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    p = schedules.sparsity(trainer.sparsity, state.step, trainer.total_steps, 1)
    p_drop = cond_lib.label_drop_probability(p, trainer.label_rates, trainer.sparsity_target)
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, trainer, batch.x0_NxHxWxC, batch.conditions, p_drop, loss_key)
    updates, opt_state = trainer.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, w: trainer.ema_decay * e + (1.0 - trainer.ema_decay) * w, state.ema_params, params)
    metrics = {"loss": loss, "sparsity": p, "grad_norm": optax.tree.norm(grads)}
    return LDMState(state.step + 1, params, batch_stats, ema, opt_state), metrics


def train_steps(trainer: LDMTrainer, state: LDMState, data: LDMData, key: jax.Array, num_steps: int,
                batch_sharding=None):
    """``num_steps`` steps in one program (``loop.scan_steps``); metrics per step."""
    return loop.scan_steps(lambda s: train_step(trainer, s, data, key, batch_sharding), state, num_steps)


def compiled_train_steps(trainer: LDMTrainer, num_steps: int, mesh: Mesh):
    """jit of ``train_steps`` over the mesh: state and data replicated, each step's batch sharded along ``data``.
    The state is donated."""
    if trainer.batch_size % mesh.size:
        raise InputError(f"The global batch size {trainer.batch_size} must be divisible by the {mesh.size} devices.")
    fn = functools.partial(train_steps, trainer, num_steps=num_steps,
                           batch_sharding=NamedSharding(mesh, P(DATA_AXIS)))
    return jax.jit(fn, donate_argnums=0)


def replicate(tree, mesh: Mesh):
    """Puts ``tree`` on every device of the mesh (parameters, optimiser state, the training set)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def train_unet(config, workdir: str, trainer: LDMTrainer, data: LDMData, key: jax.Array,
               on_milestone=None) -> LDMState:
    """Trains (or resumes) the U-Net on every device; returns the final state (replicated on the mesh).

    ``on_milestone(step, state)`` runs after every ``eval.every_steps`` steps (when set), once that step's
    checkpoint is saved."""
    mesh = data_mesh()
    init_key, train_key = jax.random.split(key)
    data = replicate(data, mesh)
    state = replicate(run_once(lambda k, d: init_state(trainer, k, d), init_key, data), mesh)
    manager = run_dir.checkpoint_manager(os.path.join(workdir, run_dir.CHECKPOINTS))
    restored = run_dir.restore_latest(manager, state)
    state = state if restored is None else restored
    done, total = int(state.step), trainer.total_steps
    if done < total:
        params = sum(x.size for x in jax.tree.leaves(state.params))
        print(f"mcjax: U-Net ({params:,} parameters) from step {done} to {total}, batch {trainer.batch_size} on "
              f"{mesh.size} {jax.devices()[0].platform} device(s)", flush=True)
    milestone_every = int(config.eval.get("every_steps", 0))
    if milestone_every < 0:
        raise InputError(f"eval.every_steps must be >= 0 (0: evaluate at the end only), got {milestone_every}.")
    primary = jax.process_index() == 0  # the process that writes metrics
    writer = MetricWriter(workdir, tensorboard=config.train.tensorboard) if primary else None
    programs = {}

    def chunk(state, first, num):
        if num not in programs:
            programs[num] = compiled_train_steps(trainer, num, mesh)
        return programs[num](state, data, train_key)

    def log(first, end, metrics):
        means = {name: float(np.mean(values)) for name, values in metrics.items()}
        if writer is not None:
            writer.write(end, means)
            writer.summarise(end, means)
        return means["loss"]

    try:
        state = loop.run(state, done, total, chunk, chunk_size=loop.steps_per_call(config.train.steps_per_chunk, 100),
                         log=log, log_every=max(int(config.train.log_every_steps), 1),
                         checkpoint_every=max(int(config.train.checkpoint_every_steps), 1),
                         save=lambda step, state: run_dir.save_checkpoint(manager, step, state),
                         milestone_every=milestone_every, on_milestone=on_milestone, name="U-Net",
                         progress=ProgressBar(total, "U-Net steps", enabled=config.train.progress and primary))
    finally:
        manager.close()
        if writer is not None:
            writer.close()
    return state
