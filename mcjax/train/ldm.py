"""Training the mcLDM denoiser: one pure step, scanned over chunks of steps, data-parallel over a device mesh.

The latents (or images) and their conditions live on the devices; each step draws its batch rows, condition masks,
timesteps, noise and dropout from ``fold_in(key, step)``, so a resumed run continues exactly. The global batch is
sharded over the mesh's ``data`` axis and the parameters are replicated: the same program runs on one CPU or on N
accelerators (XLA inserts the gradient all-reduce; batch norm sees the global batch), and with
``jax.distributed.initialize()`` on several hosts.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mcjax import conditions as cond_lib
from mcjax import diffusion, schedules
from mcjax.models.unet import ConditionalUNet

DATA_AXIS = "data"


class LDMTrainer(NamedTuple):
    """Everything static about the training program."""

    model: ConditionalUNet
    noise_schedule: diffusion.NoiseSchedule
    optimizer: optax.GradientTransformation
    sparsity: schedules.ScheduleParams  # condition sparsity p_t per step (the paper: linear 0.1 -> 0.25)
    total_steps: int
    batch_size: int  # global batch, divisible by the number of devices
    ema_decay: float
    masking: str = "per_condition"  # see mcjax.conditions.MASKING_MODES
    loss_weights: jax.Array | None = None  # [T] ε-MSE weight per timestep (diffusion.timestep_loss_weights); None: 1


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
    """ε-prediction MSE (weighted per timestep if the trainer says so) on conditions masked at sparsity p; returns
    (loss, new batch statistics)."""
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
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, trainer, batch.x0_NxHxWxC, batch.conditions, p, loss_key)
    updates, opt_state = trainer.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, w: trainer.ema_decay * e + (1.0 - trainer.ema_decay) * w, state.ema_params, params)
    metrics = {"loss": loss, "sparsity": p, "grad_norm": optax.tree.norm(grads)}
    return LDMState(state.step + 1, params, batch_stats, ema, opt_state), metrics


def train_steps(trainer: LDMTrainer, state: LDMState, data: LDMData, key: jax.Array, num_steps: int,
                batch_sharding=None):
    """``num_steps`` steps as one scan; metrics per step. ``num_steps=1`` is the step without a loop around it: on
    CPUs, XLA runs convolutions inside loops about 7x slower (measured on the tiny test U-Net: 130 vs 19 ms per
    step), so there a host loop over single steps is the faster program."""
    def body(state, _):
        return train_step(trainer, state, data, key, batch_sharding)

    if num_steps == 1:
        state, metrics = body(state, None)
        return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(body, state, length=num_steps)


def compiled_train_steps(trainer: LDMTrainer, num_steps: int, mesh: Mesh):
    """jit of ``train_steps`` over the mesh: state and data replicated, each step's batch sharded along ``data``.
    The state is donated."""
    if trainer.batch_size % mesh.size:
        raise ValueError(f"The global batch size {trainer.batch_size} must be divisible by the {mesh.size} devices.")
    fn = functools.partial(train_steps, trainer, num_steps=num_steps,
                           batch_sharding=NamedSharding(mesh, P(DATA_AXIS)))
    return jax.jit(fn, donate_argnums=0)


def replicate(tree, mesh: Mesh):
    """Puts ``tree`` on every device of the mesh (parameters, optimiser state, the training set)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
