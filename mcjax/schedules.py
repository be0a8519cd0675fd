"""Sparsity schedules: ``step -> p_t``, evaluated inside the compiled training step.

Paper formulas (t = gradient step, T = total steps):
- ``constant``:    p_t = p_start
- ``linear``:      p_t = p_start + (p_end - p_start) t / T
- ``step``:        eq. 4, N segments: f(i) = p_start + (i - 1)(p_end - p_start) / N for segment i = 1..N
- ``exponential``: eq. 5, p_t = p_start + (p_end - p_start)(1 - exp(-t / tau)), tau = T unless set
Each increases or decreases depending on the sign of p_end - p_start.

The authors' code's variants (``reference_linear``, ``reference_step``, ``reference_exponential``) change once per
epoch and the step/exponential ones are geometric (multiplicative); zero endpoints become 1e-10 as there.

A schedule is data (``ScheduleParams``, arrays), so runs with different schedules — even different kinds — are
vmapped into one program: ``sparsity`` evaluates every formula and selects the run's kind.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax.numpy as jnp
import ml_collections
import numpy as np

from mcjax.errors import InputError

KINDS = ("constant", "linear", "step", "exponential", "reference_linear", "reference_step", "reference_exponential")
_REFERENCE_EPS = 1e-10


class ScheduleParams(NamedTuple):
    """One schedule as arrays (stack them along a leading axis for vmapped runs)."""

    kind: jnp.ndarray  # int32 index into KINDS
    p_start: jnp.ndarray
    p_end: jnp.ndarray
    num_segments: jnp.ndarray  # step: N; reference_step: the run has N geometric steps
    time_constant: jnp.ndarray  # exponential: tau / T


def schedule_params(config: ml_collections.ConfigDict) -> ScheduleParams:
    """Validates a schedule config (fields ``kind``, ``p_start``, ``p_end``, ``num_segments``, ``time_constant``; see
    the ``sparsity`` block of configs/geobiked_vae.py) and turns it into arrays."""
    if config.kind not in KINDS:
        raise InputError(f"Unknown sparsity schedule kind {config.kind!r}; choose from {KINDS}.")
    for name in ("p_start", "p_end"):
        value = float(config[name])
        if not 0.0 <= value <= 1.0:
            raise InputError(f"Sparsity schedule: {name} must be in [0, 1], got {value}.")
    if int(config.num_segments) < 1:
        raise InputError(f"Sparsity schedule: num_segments must be >= 1, got {config.num_segments}.")
    if float(config.time_constant) <= 0:
        raise InputError(f"Sparsity schedule: time_constant must be > 0, got {config.time_constant}.")
    return ScheduleParams(  # host arrays: made before any program runs, with no eager JAX op to compile
        kind=np.asarray(KINDS.index(config.kind), np.int32),
        p_start=np.asarray(config.p_start, np.float32),
        p_end=np.asarray(config.p_end, np.float32),
        num_segments=np.asarray(config.num_segments, np.float32),
        time_constant=np.asarray(config.time_constant, np.float32),
    )


def _toward(p, p_start, p_end):
    """Clamps p so it never passes p_end coming from p_start (the reference's stopping rule)."""
    return jnp.where(p_end >= p_start, jnp.minimum(p, p_end), jnp.maximum(p, p_end))


def _formulas(s: ScheduleParams, t, total_steps, steps_per_epoch) -> list:
    """Every kind's value at step t, in the order of KINDS."""
    delta = s.p_end - s.p_start
    segment = jnp.clip(jnp.floor(t * s.num_segments / total_steps), 0, s.num_segments - 1) + 1
    epochs = jnp.maximum(jnp.floor(total_steps / steps_per_epoch), 1.0)
    epoch = jnp.floor(t / steps_per_epoch)  # the reference steps its schedule after each epoch
    ref_start, ref_end = jnp.maximum(s.p_start, _REFERENCE_EPS), jnp.maximum(s.p_end, _REFERENCE_EPS)
    log_ratio = jnp.log(ref_end / ref_start)
    # reference_step: epochs counted from 1, multiplied by gamma when the epoch number is a multiple of the size.
    epochs_per_segment = jnp.maximum(jnp.floor(epochs / s.num_segments), 1.0)
    multiplications = jnp.floor((epoch + 1) / epochs_per_segment) - jnp.floor(1.0 / epochs_per_segment)
    step_exponent = multiplications / jnp.maximum(epochs / epochs_per_segment - 1.0, 1.0)
    return [
        s.p_start,
        s.p_start + delta * jnp.clip(t / total_steps, 0.0, 1.0),
        s.p_start + (segment - 1) * delta / s.num_segments,
        s.p_start + delta * (1.0 - jnp.exp(-t / (s.time_constant * total_steps))),
        _toward(s.p_start + epoch * delta / epochs, s.p_start, s.p_end),
        _toward(ref_start * jnp.exp(log_ratio * step_exponent), ref_start, ref_end),
        jnp.clip(ref_start * jnp.exp(log_ratio * epoch / epochs), 0.0, 1.0),  # not clamped at p_end (reference)
    ]


def sparsity(s: ScheduleParams, step, total_steps, steps_per_epoch) -> jnp.ndarray:
    """p_t of schedule ``s`` at gradient ``step`` (0-based) of a run with ``total_steps`` steps (>= 1; traced values
    allowed, so runs of different lengths share a program)."""
    t = jnp.asarray(step, jnp.float32)
    total_steps, steps_per_epoch = (jnp.asarray(v, jnp.float32) for v in (total_steps, steps_per_epoch))
    values = jnp.stack(jnp.broadcast_arrays(*_formulas(s, t, total_steps, steps_per_epoch)))
    return jnp.take(values, s.kind, axis=0).astype(jnp.float32)


def create_sparsity_schedule(config: ml_collections.ConfigDict, total_steps: int,
                             steps_per_epoch: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The schedule of ``config`` as a pure ``step -> p_t`` function."""
    if total_steps < 1 or steps_per_epoch < 1:
        raise InputError("Sparsity schedule: total_steps and steps_per_epoch must be >= 1.")
    return functools.partial(sparsity, schedule_params(config), total_steps=total_steps,
                             steps_per_epoch=steps_per_epoch)
