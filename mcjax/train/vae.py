"""Training the mcVAE: one pure step, scanned over epochs, vmapped over runs, compiled once.

Randomness is keyed by position: everything random in epoch e — its batch order, the condition masks and the
z-noise of its steps — is drawn at the start of the epoch from ``fold_in(run_key, e)``, so a run resumed from a
checkpoint continues bit-exactly and needs no saved PRNG state. Drawing a whole epoch's noise at once also keeps
PRNG work out of the per-step loop.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.flatten_util import ravel_pytree

from mcjax import conditions as cond_lib
from mcjax import schedules
from mcjax.compile import run_once
from mcjax.models.vae import MCVAE, kl_to_standard_normal
from mcjax.train.runs import RunSpec

_EPOCH_STREAM, _INIT_STREAM = 0, 2
RECONSTRUCTION_REDUCTIONS = ("mean", "sum")


class TrainState(NamedTuple):
    step: jax.Array  # int32 gradient steps taken
    params: Any
    opt_state: Any


class TrainData(NamedTuple):
    """The training split, resident on device; batches are gathered inside the compiled step."""

    x_NxD: jax.Array
    conditions: cond_lib.Conditions

    @property
    def num_rows(self) -> int:
        return self.x_NxD.shape[0]


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam or AdamW with an optional staircase decay of the learning rate every N epochs."""
    lr = config.learning_rate
    if config.lr_decay_every_epochs:
        lr = optax.exponential_decay(config.learning_rate, config.lr_decay_every_epochs * steps_per_epoch,
                                     config.lr_decay_factor, staircase=True)
    # flatten: the update runs on one parameter vector (a few fused kernels instead of several per leaf).
    if config.name == "adam":
        return optax.flatten(optax.adam(lr, b1=config.b1, b2=config.b2))
    if config.name == "adamw":
        return optax.flatten(optax.adamw(lr, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay))
    raise ValueError(f"Unknown optimizer {config.name!r}; choose 'adam' or 'adamw'.")


class StepNoise(NamedTuple):
    """The randomness of one step: uniforms that decide the condition masks, and the reparameterisation noise."""

    mask_uniform_BxM: jax.Array
    eps_BxL: jax.Array


def vae_loss(params, model: MCVAE, x_BxD, conditions: cond_lib.Conditions, noise: StepNoise, p,
             config: ml_collections.ConfigDict):
    """reconstruction_weight · squared error (summed over dims; mean or sum over rows) + beta · KL(q(z|x) || N(0, I)).

    Conditions are masked at sparsity p before they are embedded. Returns (loss, aux).
    """
    drop = cond_lib.drop_mask_from_uniform(noise.mask_uniform_BxM, p, config.masking)
    masked = cond_lib.apply_drop_mask(conditions, drop)
    x_hat, (mean, logvar) = model.apply(params, x_BxD, masked, noise.eps_BxL)
    squared_error_B = jnp.sum((x_hat - x_BxD) ** 2, axis=-1)
    reduce = jnp.mean if config.reconstruction_reduction == "mean" else jnp.sum
    reconstruction = reduce(squared_error_B)
    kl = jnp.mean(kl_to_standard_normal(mean, logvar))
    loss = config.reconstruction_weight * reconstruction + config.beta * kl
    return loss, {"reconstruction": reconstruction, "kl": kl, "row_mse": jnp.mean(squared_error_B)}


class Trainer(NamedTuple):
    """Everything static about a training program: model, optimiser and the sizes that fix the step count."""

    model: MCVAE
    optimizer: optax.GradientTransformation
    train_config: ml_collections.ConfigDict
    batch_size: int
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def make_trainer(model: MCVAE, config: ml_collections.ConfigDict, num_train_rows: int) -> Trainer:
    """Validates the training config against the data and fixes the step count.

    Each epoch is one pass over a fresh permutation in full batches (the remainder rows of a permutation wait for
    the next epoch's shuffle), so every step has the same shape and the whole run compiles once.
    """
    train = config.train
    if train.batch_size < 1 or train.epochs < 1:
        raise ValueError(f"train.batch_size and train.epochs must be >= 1, got {train.batch_size}, {train.epochs}.")
    if train.batch_size > num_train_rows:
        raise ValueError(f"train.batch_size {train.batch_size} exceeds the {num_train_rows} training rows.")
    if train.reconstruction_reduction not in RECONSTRUCTION_REDUCTIONS:
        raise ValueError(f"train.reconstruction_reduction must be one of {RECONSTRUCTION_REDUCTIONS}.")
    if train.masking not in cond_lib.MASKING_MODES:
        raise ValueError(f"train.masking must be one of {cond_lib.MASKING_MODES}, got {train.masking!r}.")
    steps_per_epoch = num_train_rows // train.batch_size
    return Trainer(model, make_optimizer(config.optimizer, steps_per_epoch), train, train.batch_size,
                   steps_per_epoch, train.epochs)


def init_state(trainer: Trainer, run: RunSpec, data: TrainData) -> TrainState:
    """Fresh parameters and optimiser state for one run (vmap it over a sweep's RunSpec)."""
    init_key = jax.random.fold_in(run.key, _INIT_STREAM)
    sample = jax.tree.map(lambda a: a[:1], data)
    params = trainer.model.init(init_key, sample.x_NxD, sample.conditions, jnp.zeros((1, trainer.model.latent_dim)))
    return TrainState(jnp.zeros((), jnp.int32), params, trainer.optimizer.init(params))


def train_step(trainer: Trainer, state: TrainState, run: RunSpec, data: TrainData, rows_B, noise: StepNoise):
    """One gradient step on the rows ``rows_B`` at the schedule's sparsity for this step."""
    p = schedules.sparsity(run.schedule, state.step, trainer.total_steps, trainer.steps_per_epoch)
    batch = jax.tree.map(lambda a: a[rows_B], data)
    grad_fn = jax.value_and_grad(vae_loss, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, trainer.model, batch.x_NxD, batch.conditions, noise, p,
                                 trainer.train_config)
    updates, opt_state = trainer.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The norm of the raveled gradient: XLA shares the concatenation with optax.flatten's, one reduction in all.
    metrics = {"loss": loss, **aux, "sparsity": p, "grad_norm": jnp.linalg.norm(ravel_pytree(grads)[0])}
    return TrainState(state.step + 1, params, opt_state), metrics


def epoch_randomness(trainer: Trainer, run: RunSpec, data: TrainData, epoch_index):
    """Batch rows [S, B] and step noise [S, ...] of one epoch, all drawn from ``fold_in(run_key, epoch)``."""
    order_key, mask_key, eps_key = jax.random.split(
        jax.random.fold_in(jax.random.fold_in(run.key, _EPOCH_STREAM), epoch_index), 3)
    steps, batch = trainer.steps_per_epoch, trainer.batch_size
    # A shuffle as one sort of random 32-bit keys (jax.random.permutation sorts several times).
    order = jnp.argsort(jax.random.bits(order_key, (data.num_rows,), jnp.uint32))
    rows = order[: steps * batch].reshape(steps, batch)
    num_conditions = data.conditions.cat_BxK.shape[1] + data.conditions.num_BxJ.shape[1]
    noise = StepNoise(jax.random.uniform(mask_key, (steps, batch, num_conditions)),
                      jax.random.normal(eps_key, (steps, batch, trainer.model.latent_dim)))
    return rows, noise


def train_epoch(trainer: Trainer, state: TrainState, run: RunSpec, data: TrainData):
    """One pass over a fresh permutation as a scan; returns the new state and the epoch's mean metrics (plus the
    first step whose loss was not finite, or -1)."""
    rows, noise = epoch_randomness(trainer, run, data, state.step // trainer.steps_per_epoch)

    def step(state, inputs):
        return train_step(trainer, state, run, data, *inputs)

    new_state, metrics = jax.lax.scan(step, state, (rows, noise))
    finite = jnp.isfinite(metrics["loss"])
    bad_step = jnp.where(jnp.all(finite), -1, state.step + jnp.argmin(finite))
    return new_state, {**jax.tree.map(jnp.mean, metrics), "nonfinite_step": bad_step}


def train_epochs(trainer: Trainer, max_epochs: int, state: TrainState, run: RunSpec, data: TrainData, num_epochs):
    """``num_epochs`` (traced, <= ``max_epochs``) epochs in one compiled loop, so every chunk of a run — also a
    shorter last one — reuses one program. Per-epoch metrics come back in buffers of length ``max_epochs``."""
    metric_shapes = jax.eval_shape(lambda s: train_epoch(trainer, s, run, data)[1], state)
    buffers = jax.tree.map(lambda m: jnp.zeros((max_epochs,) + m.shape, m.dtype), metric_shapes)

    def body(i, carry):
        state, buffers = carry
        state, metrics = train_epoch(trainer, state, run, data)
        return state, jax.tree.map(lambda b, m: b.at[i].set(m), buffers, metrics)

    return jax.lax.fori_loop(0, num_epochs, body, (state, buffers))


def compiled_train_epochs(trainer: Trainer, max_epochs: int):
    """jit(vmap(train_epochs)) over runs: ``(state_R, runs_R, data, num_epochs) -> (state_R, metrics_RxE)``.
    The state is donated so each chunk updates it in place."""
    fn = functools.partial(train_epochs, trainer, max_epochs)
    return jax.jit(jax.vmap(fn, in_axes=(0, 0, None, None)), donate_argnums=0)


def init_states(trainer: Trainer, runs: RunSpec, data: TrainData) -> TrainState:
    """Initial states of every run (stacked), compiled once."""
    return run_once(jax.vmap(functools.partial(init_state, trainer), in_axes=(0, None)), runs, data)
