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
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mcjax import conditions as cond_lib
from mcjax import schedules
from mcjax.compile import run_once
from mcjax.errors import InputError
from mcjax.models.layers import gaussian_kl, kl_to_standard_normal
from mcjax.models.mcvae import MCVAE, latent_noise
from mcjax.train.runs import RunSpec

_EPOCH_STREAM, _INIT_STREAM, _SUBSET_STREAM = 0, 2, 3
RECONSTRUCTION_REDUCTIONS = ("mean", "sum")
RUN_AXIS = "runs"  # the mesh axis runs are sharded over
METRICS = ("loss", "reconstruction", "kl", "active_dims", "row_mse", "sparsity", "grad_norm")  # and kl_dim_<d>
ACTIVE_DIM_KL = 0.01  # nats: a latent dimension whose KL (mean over rows) stays below this carries no information


class MCVAEState(NamedTuple):
    step: jax.Array  # int32 gradient steps this run has taken
    epoch: jax.Array  # int32 epochs this run has finished
    params: Any
    opt_state: Any


class MCVAEData(NamedTuple):
    """The training split, resident on device; batches are gathered inside the compiled step."""

    x_NxD: jax.Array
    conditions: cond_lib.Conditions

    @property
    def num_rows(self) -> int:
        return self.x_NxD.shape[0]


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam or AdamW without the learning rate, which is per run (``learning_rate``); ``-lr * update`` is the step."""
    # flatten: the update runs on one parameter vector (a few fused kernels instead of several per leaf).
    if config.name == "adam":
        return optax.flatten(optax.scale_by_adam(b1=config.b1, b2=config.b2))
    if config.name == "adamw":
        return optax.flatten(optax.chain(optax.scale_by_adam(b1=config.b1, b2=config.b2),
                                         optax.add_decayed_weights(config.weight_decay)))
    raise InputError(f"Unknown optimizer {config.name!r}; choose 'adam' or 'adamw'.")


def learning_rate(config: ml_collections.ConfigDict, run: RunSpec, step) -> jax.Array:
    """The run's learning rate, with the optional staircase decay every ``lr_decay_every_epochs`` of its epochs."""
    if not config.lr_decay_every_epochs:
        return run.learning_rate
    decays = jnp.floor(step / (config.lr_decay_every_epochs * run.steps_per_epoch))
    return run.learning_rate * config.lr_decay_factor ** decays


class StepNoise(NamedTuple):
    """The randomness of one step: uniforms that decide the condition masks, and the reparameterisation noise."""

    mask_uniform_BxM: jax.Array
    eps_BxL: jax.Array


def vae_loss(params, model: MCVAE, x_BxD, conditions: cond_lib.Conditions, noise: StepNoise, row_weight_B, p,
             beta, widths, config: ml_collections.ConfigDict):
    """reconstruction_weight · squared error (summed over dims; mean or sum over rows) + beta · KL(q(z|x) || prior),
    the prior N(0, I) or p(z | masked y).

    Observed conditions are masked with probability p (a scalar, or one per condition) before they are embedded. Rows
    of weight 0 pad a batch smaller than the program's. Returns (loss, aux); aux holds the KL of each latent
    dimension (``kl_per_dim``, mean over rows) and counts the active ones (KL above ``ACTIVE_DIM_KL``).
    """
    drop = cond_lib.drop_mask_from_uniform(noise.mask_uniform_BxM, p, config.masking)
    masked = cond_lib.apply_drop_mask(conditions, drop)
    x_hat, (mean, logvar), prior = model.apply(params, x_BxD, masked, noise.eps_BxL, widths)
    squared_error_B = jnp.sum((x_hat - x_BxD) ** 2, axis=-1)
    rows = jnp.sum(row_weight_B)
    summed = jnp.sum(row_weight_B * squared_error_B)
    reconstruction = summed / rows if config.reconstruction_reduction == "mean" else summed
    kl_BxL = gaussian_kl(mean, logvar, *(prior or ()))
    kl_B = kl_to_standard_normal(mean, logvar) if prior is None else jnp.sum(kl_BxL, axis=-1)
    kl = jnp.sum(row_weight_B * kl_B) / rows
    loss = config.reconstruction_weight * reconstruction + beta * kl
    kl_per_dim = jnp.sum(row_weight_B[:, None] * kl_BxL, axis=0) / rows
    active_dims = jnp.sum(jax.lax.stop_gradient(kl_per_dim) > ACTIVE_DIM_KL).astype(jnp.float32)
    return loss, {"reconstruction": reconstruction, "kl": kl, "active_dims": active_dims, "row_mse": summed / rows,
                  "kl_per_dim": kl_per_dim}


def metric_names(latent_dim: int) -> tuple[str, ...]:
    """The per-step metrics of a model with ``latent_dim`` latent dimensions, in ``metric_vector``'s order."""
    return METRICS + tuple(f"kl_dim_{d}" for d in range(latent_dim))


def metric_vector(metrics: dict) -> jax.Array:
    """A step's metrics as one vector (``metric_names``' order): summing it over an epoch's steps is one addition per
    step, where a sum per metric is one XLA:CPU kernel each."""
    return jnp.concatenate([jnp.stack([metrics[k] for k in METRICS]), metrics["kl_per_dim"]])


class MCVAETrainer(NamedTuple):
    """Everything static about a training program: model, optimiser, config, the largest batch and run length, and
    how many positions of an epoch's order any run uses; each run's own batch size, steps per epoch and epochs come
    with its RunSpec."""

    model: MCVAE
    optimizer: optax.GradientTransformation
    config: ml_collections.ConfigDict
    batch_size: int
    epochs: int
    positions_per_epoch: int  # max over runs of steps_per_epoch * batch_size (<= training rows)
    # When every run has the same steps per epoch / epochs, the loops get static (unbatched) trip counts: a vmapped
    # loop whose trip count differs per run selects every carry at every iteration (measured: 10 % per step).
    common_steps_per_epoch: int | None
    common_epochs: bool
    label_rates: tuple[float, ...] = ()  # per condition, the training split's (train.sparsity_target "total")


def validate_train_config(config: ml_collections.ConfigDict, num_train_rows: int) -> None:
    """One clear error for a training config that cannot work with ``num_train_rows`` rows."""
    train = config.train
    if train.batch_size < 1 or train.epochs < 1:
        raise InputError(f"train.batch_size and train.epochs must be >= 1, got {train.batch_size}, {train.epochs}.")
    if train.batch_size > num_train_rows:
        raise InputError(f"train.batch_size {train.batch_size} exceeds the {num_train_rows} training rows.")
    if train.reconstruction_reduction not in RECONSTRUCTION_REDUCTIONS:
        raise InputError(f"train.reconstruction_reduction must be one of {RECONSTRUCTION_REDUCTIONS}.")
    cond_lib.validate_masking(train.masking, train.sparsity_target)
    make_optimizer(config.optimizer)


def make_trainer(model: MCVAE, config: ml_collections.ConfigDict, runs: RunSpec,
                 label_rates: tuple[float, ...] = ()) -> MCVAETrainer:
    """The program for ``runs``: batches as large as the largest run's, as many epochs as the longest run's.

    Each epoch is one pass over a fresh permutation of the run's rows in full batches (the remainder rows wait for
    the next epoch's shuffle), so every step has the same shape and the whole run compiles once.
    """
    steps, epochs = np.asarray(runs.steps_per_epoch), np.asarray(runs.epochs)
    positions = steps * np.asarray(runs.batch_size)
    return MCVAETrainer(model, make_optimizer(config.optimizer), config, int(np.max(runs.batch_size)),
                        int(np.max(epochs)), int(np.max(positions)),
                        int(steps[0]) if np.all(steps == steps[0]) else None, bool(np.all(epochs == epochs[0])),
                        tuple(label_rates))


def init_state(trainer: MCVAETrainer, run: RunSpec, data: MCVAEData) -> MCVAEState:
    """Fresh parameters and optimiser state for one run (vmap it over stacked RunSpecs)."""
    init_key = jax.random.fold_in(run.key, _INIT_STREAM)
    sample = jax.tree.map(lambda a: a[:1], data)
    params = trainer.model.init(init_key, sample.x_NxD, sample.conditions, jnp.zeros((1, trainer.model.latent_dim)),
                                run.widths)
    zero = jnp.zeros((), jnp.int32)
    return MCVAEState(zero, zero, params, trainer.optimizer.init(params))


class EpochRandomness(NamedTuple):
    """All the randomness of one epoch, by position in the epoch's order of the run's rows: the row at each position,
    its mask uniforms and its latent noise. Position p's values do not depend on how many positions a program draws
    (JAX's partitionable threefry), so a run draws the same whatever batch size or step count its program has."""

    rows_P: jax.Array
    mask_uniform_PxM: jax.Array
    eps_PxL: jax.Array


def subset_order(run: RunSpec, num_rows: int) -> jax.Array:
    """A fixed seeded order of the training split; the run trains on its first ``train_size`` rows, so smaller
    subsets of one seed are nested in larger ones."""
    return jnp.argsort(jax.random.bits(jax.random.fold_in(run.key, _SUBSET_STREAM), (num_rows,), jnp.uint32))


def epoch_randomness(trainer: MCVAETrainer, run: RunSpec, data: MCVAEData, epoch_index, order_N) -> EpochRandomness:
    """Drawn from ``fold_in(run_key, epoch)``: the run's rows (the first ``train_size`` of ``order_N``) freshly
    shuffled, and the noise of the positions its steps use."""
    order_key, mask_key, eps_key = jax.random.split(
        jax.random.fold_in(jax.random.fold_in(run.key, _EPOCH_STREAM), epoch_index), 3)
    n, positions = data.num_rows, trainer.positions_per_epoch
    # A shuffle as one sort of random 32-bit keys (jax.random.permutation sorts several times); rows outside the
    # subset sort last.
    in_subset = jnp.arange(n) < run.train_size
    shuffle_keys = jnp.where(in_subset, jax.random.bits(order_key, (n,), jnp.uint32) >> 1, jnp.uint32(2**32 - 1))
    num_conditions = data.conditions.cat_BxK.shape[1] + data.conditions.num_BxJ.shape[1]
    return EpochRandomness(order_N[jnp.argsort(shuffle_keys)[:positions]],
                           jax.random.uniform(mask_key, (positions, num_conditions)),
                           latent_noise(eps_key, (positions,), trainer.model.latent_dim))


def train_step(trainer: MCVAETrainer, state: MCVAEState, run: RunSpec, data: MCVAEData, randomness: EpochRandomness,
               step_in_epoch):
    """One gradient step on the epoch's batch number ``step_in_epoch`` at the schedule's sparsity for this step."""
    slots = jnp.arange(trainer.batch_size)
    positions = jnp.minimum(step_in_epoch * run.batch_size + slots, trainer.positions_per_epoch - 1)
    rows = randomness.rows_P[positions]
    noise = StepNoise(randomness.mask_uniform_PxM[positions], randomness.eps_PxL[positions])
    batch = jax.tree.map(lambda a: a[rows], data)
    total_steps = run.steps_per_epoch * run.epochs
    p = schedules.sparsity(run.schedule, state.step, total_steps, run.steps_per_epoch)
    p_drop = cond_lib.label_drop_probability(p, trainer.label_rates, trainer.config.train.sparsity_target)
    grad_fn = jax.value_and_grad(vae_loss, has_aux=True)
    (loss, aux), grads = grad_fn(state.params, trainer.model, batch.x_NxD, batch.conditions, noise,
                                 (slots < run.batch_size).astype(jnp.float32), p_drop, run.beta, run.widths,
                                 trainer.config.train)
    updates, opt_state = trainer.optimizer.update(grads, state.opt_state, state.params)
    lr = learning_rate(trainer.config.optimizer, run, state.step)
    params = jax.tree.map(lambda w, u: w - lr * u, state.params, updates)
    # The norm of the raveled gradient: XLA shares the concatenation with optax.flatten's, one reduction in all.
    metrics = {"loss": loss, **aux, "sparsity": p, "grad_norm": jnp.linalg.norm(ravel_pytree(grads)[0])}
    return state._replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def train_epoch(trainer: MCVAETrainer, state: MCVAEState, run: RunSpec, data: MCVAEData, order_N):
    """One pass over a fresh permutation of the run's rows; returns the new state and the epoch's mean metrics (plus
    the first step whose loss was not finite, or -1)."""
    randomness = epoch_randomness(trainer, run, data, state.epoch, order_N)

    def step(s, carry):
        state, sums, bad_step = carry
        new_state, metrics = train_step(trainer, state, run, data, randomness, s)
        bad_step = jnp.where((bad_step < 0) & ~jnp.isfinite(metrics["loss"]), state.step, bad_step)
        return new_state, sums + metric_vector(metrics), bad_step

    names = metric_names(trainer.model.latent_dim)
    trip_count = trainer.common_steps_per_epoch or run.steps_per_epoch
    state, sums, bad_step = jax.lax.fori_loop(0, trip_count, step,
                                              (state, jnp.zeros((len(names),), jnp.float32), jnp.int32(-1)))
    means = dict(zip(names, sums / run.steps_per_epoch))
    return state._replace(epoch=state.epoch + 1), {**means, "nonfinite_step": bad_step}


def train_epochs(trainer: MCVAETrainer, max_epochs: int, state: MCVAEState, run: RunSpec, data: MCVAEData, num_epochs):
    """Up to ``num_epochs`` (traced, <= ``max_epochs`` and <= the epochs left of the longest run) epochs in one
    compiled loop, fewer where a run ends first, so every chunk of every run — also a shorter last one — reuses one
    program. Per-epoch metrics come back in buffers of length ``max_epochs``; ``trained`` marks the epochs this run
    actually trained."""
    buffers = {k: jnp.zeros((max_epochs,), jnp.float32) for k in metric_names(trainer.model.latent_dim)}
    buffers |= {"nonfinite_step": jnp.full((max_epochs,), -1, jnp.int32), "trained": jnp.zeros((max_epochs,), bool)}
    order_N = subset_order(run, data.num_rows)

    def body(i, carry):
        state, buffers = carry
        state, metrics = train_epoch(trainer, state, run, data, order_N)
        metrics["trained"] = jnp.bool_(True)
        return state, {k: b.at[i].set(metrics[k]) for k, b in buffers.items()}

    # The host never asks for epochs beyond the longest run, so with a common run length num_epochs is exact.
    epochs = num_epochs if trainer.common_epochs else jnp.clip(run.epochs - state.epoch, 0, num_epochs)
    return jax.lax.fori_loop(0, epochs, body, (state, buffers))


def over_runs(fn, per_run: tuple[bool, ...], mesh: Mesh | None = None):
    """``fn`` vmapped over the runs (the arguments marked in ``per_run``; the others are shared). With a mesh, the
    runs are sharded over its ``runs`` axis and each device maps its own shard — runs are independent, so there is no
    communication (measured on 2 CPU devices: as fast as one program per device, where letting XLA partition the
    vmapped program was 6x slower)."""
    mapped = jax.vmap(fn, in_axes=tuple(0 if r else None for r in per_run))
    if mesh is None:
        return mapped
    specs = tuple(P(RUN_AXIS) if r else P() for r in per_run)
    return jax.shard_map(mapped, mesh=mesh, in_specs=specs, out_specs=P(RUN_AXIS), check_vma=False)


def compiled_train_epochs(trainer: MCVAETrainer, max_epochs: int, mesh: Mesh | None = None):
    """``(state_R, runs_R, data, num_epochs) -> (state_R, metrics_RxE)``: train_epochs over runs, compiled. The state
    is donated so each chunk updates it in place."""
    fn = functools.partial(train_epochs, trainer, max_epochs)
    return jax.jit(over_runs(fn, (True, True, False, False), mesh), donate_argnums=0)


def abstract_states(trainer: MCVAETrainer, runs: RunSpec, data: MCVAEData, mesh: Mesh | None = None) -> MCVAEState:
    """What ``init_states`` returns, as ``jax.ShapeDtypeStruct``s (sharded over the mesh's runs axis): enough to
    compile the training program while the parameters are initialised."""
    shapes = jax.eval_shape(_init_over_runs(trainer, mesh), runs, data)
    sharding = None if mesh is None else NamedSharding(mesh, P(RUN_AXIS))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)


def init_states(trainer: MCVAETrainer, runs: RunSpec, data: MCVAEData, mesh: Mesh | None = None) -> MCVAEState:
    """Initial states of every run (stacked), compiled once."""
    return run_once(_init_over_runs(trainer, mesh), runs, data)


def _init_over_runs(trainer: MCVAETrainer, mesh: Mesh | None):
    return over_runs(functools.partial(init_state, trainer), (True, False), mesh)
