"""Training the mcLDM denoiser: one pure step, scanned over chunks of steps, data-parallel over a device mesh.

The latents (or images) and their conditions live on the devices, or, beyond the device bound, on the host, whence
each chunk's batches are gathered and sent (``StreamedData``). Each step's batch rows, condition masks, timesteps,
noise and dropout come from ``fold_in(key, step)``, so a resumed or streamed run trains exactly like a resident one.
The global batch is sharded over the mesh's ``data`` axis and the parameters are replicated: the same program runs
on one CPU or on N accelerators (XLA inserts the gradient all-reduce; batch norm sees the global batch), and with
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


class StreamedData(NamedTuple):
    """A training set beyond the device bound, on the host: x0 of every row (a memory map is fine), the training rows
    into it and their conditions [M, ...]. Each chunk's batches are gathered from it (``gather_block``)."""

    x0_NxHxWxC: np.ndarray
    rows_M: np.ndarray
    conditions: cond_lib.Conditions


def gather_block(data: StreamedData, rows_SxB: np.ndarray) -> LDMData:
    """Host arrays [S, B, ...] of the batches with training rows ``rows_SxB``. Each latent needed is read once and in
    file order (what a memory map reads fastest), then put in batch order."""
    rows = np.asarray(rows_SxB).reshape(-1)
    unique, inverse = np.unique(data.rows_M[rows], return_inverse=True)
    block = LDMData(np.asarray(data.x0_NxHxWxC[unique])[inverse.reshape(-1)],
                    jax.tree.map(lambda a: np.asarray(a)[rows], data.conditions))
    return jax.tree.map(lambda a: a.reshape(rows_SxB.shape + a.shape[1:]), block)


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


def step_keys(key: jax.Array, step) -> jax.Array:
    """[2] keys of a step, (rows, loss), from ``fold_in(key, step)``: the step alone fixes its batch and noise."""
    return jax.random.split(jax.random.fold_in(key, step))


def batch_rows(key: jax.Array, step, batch_size: int, num_rows: int) -> jax.Array:
    """int32 [B] rows of the training set that step ``step`` trains on."""
    return jax.random.randint(step_keys(key, step)[0], (batch_size,), 0, num_rows)


@functools.partial(jax.jit, static_argnames=("num", "batch_size", "num_rows"))
def rows_of_steps(key: jax.Array, first, num: int, batch_size: int, num_rows: int) -> jax.Array:
    """int32 [num, B] rows of steps [first, first + num), as ``train_step`` draws them: a streamed run gathers these
    on the host. A loop, not vmap: batched ``rbg`` keys draw other bits than one key at a time."""
    steps_S = first + jnp.arange(num, dtype=jnp.int32)
    return jax.lax.map(lambda step: batch_rows(key, step, batch_size, num_rows), steps_S)


def update(trainer: LDMTrainer, state: LDMState, batch: LDMData, key: jax.Array, batch_sharding=None):
    """One AdamW step on ``batch`` (x0 [B, ...]) with the loss randomness of ``fold_in(key, step)``; returns the new
    state and metrics. Both ways of feeding the batch (resident, streamed) end here."""
    if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    p = schedules.sparsity(trainer.sparsity, state.step, trainer.total_steps, 1)
    p_drop = cond_lib.label_drop_probability(p, trainer.label_rates, trainer.sparsity_target)
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats, trainer, batch.x0_NxHxWxC, batch.conditions, p_drop,
        step_keys(key, state.step)[1])
    updates, opt_state = trainer.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, w: trainer.ema_decay * e + (1.0 - trainer.ema_decay) * w, state.ema_params, params)
    metrics = {"loss": loss, "sparsity": p, "grad_norm": optax.tree.norm(grads)}
    return LDMState(state.step + 1, params, batch_stats, ema, opt_state), metrics


def train_step(trainer: LDMTrainer, state: LDMState, data: LDMData, key: jax.Array, batch_sharding=None):
    """One step on the batch of the resident training set that ``fold_in(key, step)`` draws."""
    rows_B = batch_rows(key, state.step, trainer.batch_size, data.x0_NxHxWxC.shape[0])
    return update(trainer, state, jax.tree.map(lambda a: a[rows_B], data), key, batch_sharding)


def train_steps(trainer: LDMTrainer, state: LDMState, data: LDMData, key: jax.Array, num_steps: int,
                batch_sharding=None):
    """``num_steps`` steps in one program (``loop.scan_steps``); metrics per step."""
    return loop.scan_steps(lambda s: train_step(trainer, s, data, key, batch_sharding), state, num_steps)


def streamed_train_steps(trainer: LDMTrainer, state: LDMState, block: LDMData, key: jax.Array, num_steps: int,
                         batch_sharding=None):
    """``num_steps`` steps whose batches come from ``block`` (x0 [num_steps, B, ...], gathered on the host by
    ``gather_block``): step s trains on ``block[s - first]``, first being the step the chunk starts at."""
    first = state.step
    return loop.scan_steps(
        lambda s: update(trainer, s, jax.tree.map(lambda a: a[s.step - first], block), key, batch_sharding),
        state, num_steps)


def compiled_train_steps(trainer: LDMTrainer, num_steps: int, mesh: Mesh, streamed: bool = False):
    """jit of ``train_steps`` (``streamed_train_steps`` if ``streamed``) over the mesh: state and data replicated
    (a streamed block comes sharded along its batch axis, ``streamed_chunk``), each step's batch sharded along
    ``data``. The state is donated."""
    if trainer.batch_size % mesh.size:
        raise InputError(f"The global batch size {trainer.batch_size} must be divisible by the {mesh.size} devices.")
    fn = functools.partial(streamed_train_steps if streamed else train_steps, trainer, num_steps=num_steps,
                           batch_sharding=NamedSharding(mesh, P(DATA_AXIS)))
    return jax.jit(fn, donate_argnums=0)


def replicate(tree, mesh: Mesh):
    """Puts ``tree`` on every device of the mesh (parameters, optimiser state, the training set)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def resident_chunk(trainer: LDMTrainer, data: LDMData, key: jax.Array, mesh: Mesh):
    """``chunk(state, first, num)`` for ``loop.run`` on a training set replicated on the mesh."""
    programs = {}

    def chunk(state, first, num):
        if num not in programs:
            programs[num] = compiled_train_steps(trainer, num, mesh)
        return programs[num](state, data, key)
    return chunk


def streamed_chunk(trainer: LDMTrainer, data: StreamedData, key: jax.Array, mesh: Mesh, chunk_size: int):
    """``chunk(state, first, num)`` for ``loop.run`` on a host training set: the rows of the chunk's steps
    (``rows_of_steps``, dispatched one chunk ahead so they are ready), gathered on the host while the device runs
    the previous chunk, sent to the mesh sharded along the batch axis, then the compiled steps."""
    programs, ahead = {}, {}
    rows = functools.partial(rows_of_steps, key, batch_size=trainer.batch_size, num_rows=len(data.rows_M))
    block_sharding = NamedSharding(mesh, P(None, DATA_AXIS))

    def chunk(state, first, num):
        rows_SxB = ahead.pop(first, None)
        rows_SxB = jax.device_get(rows(first, num) if rows_SxB is None or len(rows_SxB) < num else rows_SxB)[:num]
        ahead.clear()
        ahead[first + num] = rows(first + num, chunk_size)  # the next chunk's: no longer than chunk_size
        block = jax.device_put(gather_block(data, rows_SxB), block_sharding)
        if num not in programs:
            programs[num] = compiled_train_steps(trainer, num, mesh, streamed=True)
        return programs[num](state, block, key)
    return chunk


def train_unet(config, workdir: str, trainer: LDMTrainer, data: LDMData | StreamedData, key: jax.Array,
               on_milestone=None) -> LDMState:
    """Trains (or resumes) the U-Net on every device; returns the final state (replicated on the mesh). ``data`` is
    resident on the devices (``LDMData``) or streamed from the host (``StreamedData``): the same steps either way.

    ``on_milestone(step, state)`` runs after every ``eval.every_steps`` steps (when set), once that step's
    checkpoint is saved."""
    mesh = data_mesh()
    init_key, train_key = jax.random.split(key)
    streamed = isinstance(data, StreamedData)
    data = data if streamed else replicate(data, mesh)
    sample = jax.tree.map(lambda a: a[0], gather_block(data, np.zeros((1, 1), np.int32))) if streamed else data
    state = replicate(run_once(lambda k, d: init_state(trainer, k, d), init_key, sample), mesh)
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
    chunk_size = loop.steps_per_call(config.train.steps_per_chunk, 100)
    chunk = (streamed_chunk(trainer, data, train_key, mesh, chunk_size) if streamed
             else resident_chunk(trainer, data, train_key, mesh))

    def log(first, end, metrics):
        means = {name: float(np.mean(values)) for name, values in metrics.items()}
        if writer is not None:
            writer.write(end, means)
            writer.summarise(end, means)
        return means["loss"]

    try:
        state = loop.run(state, done, total, chunk, chunk_size=chunk_size,
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
