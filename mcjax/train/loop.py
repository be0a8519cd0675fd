"""The one host loop of every training job: compiled chunks of steps, metrics one chunk late, periodic actions.

A job hands ``run`` a compiled ``chunk(state, first, num) -> (state, metrics)`` that advances ``num`` units
(gradient steps, or epochs of a vmapped mcVAE stage) and returns metrics whose last axis runs over those units. The
loop:
- dispatches chunk k + 1 before it fetches the metrics of chunk k, so the device never waits for the host;
- ends chunks on the multiples of ``checkpoint_every`` and ``milestone_every`` (one "is it time" rule, ``is_time``),
  where it fetches every pending metric, saves the state and runs the milestone action;
- stops on the first non-finite loss with the step (and run) it happened at, before anything later is saved;
- writes metrics through ``log`` and moves the progress bar between chunks, never per step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from mcjax.train.metrics import ProgressBar


def steps_per_call(configured: int, accelerator_default: int) -> int:
    """Steps per compiled call: as configured, else 1 on CPUs (XLA:CPU runs convolutions inside loops several times
    slower than a host loop over single steps; measured 130 vs 19 ms per step on the tiny test U-Net), else the
    accelerator default."""
    if configured:
        return int(configured)
    return 1 if jax.default_backend() == "cpu" else accelerator_default


def scan_steps(step: Callable[[Any], tuple[Any, dict]], state, num_steps: int):
    """``num_steps`` applications of ``step(state) -> (state, metrics)`` as one ``lax.scan`` (metrics stacked on a
    leading axis); one step is the step itself with no loop around it (see ``steps_per_call``)."""
    if num_steps == 1:
        state, metrics = step(state)
        return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(lambda s, _: step(s), state, length=num_steps)


def is_time(before: int, done: int, every: int) -> bool:
    """Whether a multiple of ``every`` (0: never) lies in (before, done]."""
    return every > 0 and done // every > before // every


def _to_next_multiple(done: int, every: int) -> int:
    return every - done % every if every > 0 else 1 << 62


def first_nonfinite(loss, first_unit: int, step=None) -> tuple[int, int | None, float] | None:
    """(step, run or None, value) of the first non-finite ``loss`` entry ([units] or [runs, units]); the step is
    ``step`` at that entry when given (the exact gradient step inside an epoch), else ``first_unit`` + its index."""
    loss = np.asarray(loss)
    bad = ~np.isfinite(loss)
    if not bad.any():
        return None
    flat = np.argmax(bad.reshape(-1, loss.shape[-1]).any(axis=0))  # the earliest unit with a bad entry
    run = int(np.argmax(bad[..., flat])) if loss.ndim > 1 else None
    index = (run, flat) if run is not None else (flat,)
    return (int(np.asarray(step)[index]) if step is not None else first_unit + int(flat)), run, float(loss[index])


def run(state, done: int, total: int, chunk: Callable, *, chunk_size: int, log: Callable[[int, int, dict], float],
        log_every: int = 1, checkpoint_every: int = 0, save: Callable[[int, Any], None] | None = None,
        milestone_every: int = 0, on_milestone: Callable[[int, Any], None] | None = None,
        progress: ProgressBar | None = None, name: str = "training", run_labels=None, check_finite: bool = True,
        while_first_chunk_runs: Callable[[], None] | None = None):
    """Advances ``state`` from unit ``done`` to ``total``; returns the final state.

    ``log(first, end, metrics)`` receives the host metrics of units [first, end) (concatenated on the last axis) and
    returns the loss shown by the progress bar. ``save(done, state)`` runs at multiples of ``checkpoint_every`` and at
    the end; ``on_milestone(done, state)`` after the save at multiples of ``milestone_every``. A metric named
    ``nonfinite_step`` (the first non-finite step inside a unit, -1 if none) refines the step a NaN stop names;
    ``run_labels`` name the runs of a leading run axis.
    """
    pending = []  # (first unit, device metrics) of chunks dispatched but not yet fetched

    def flush(chunks):
        first, end = chunks[0][0], chunks[-1][0] + _units(chunks[-1][1])
        fetched = jax.device_get([metrics for _, metrics in chunks])
        metrics = {k: np.concatenate([np.asarray(m[k]) for m in fetched], axis=-1) for k in fetched[0]}
        bad = first_nonfinite(metrics["loss"], first, metrics.get("nonfinite_step")) if check_finite else None
        if bad is not None:
            step, run_index, value = bad
            where = "" if run_index is None else f" of run {run_labels[run_index] if run_labels else run_index}"
            raise FloatingPointError(f"Training stopped: the {name} loss became NaN/inf at step {step}{where} "
                                     f"(loss {value}). The last checkpoint before it is kept; lower the learning rate "
                                     f"or check the data.")
        loss = log(first, end, metrics)
        if progress is not None:
            progress.update(end, f"loss {loss:.4f}")

    first_chunk = True
    while done < total:
        num = min(chunk_size, total - done, _to_next_multiple(done, checkpoint_every),
                  _to_next_multiple(done, milestone_every))
        state, metrics = chunk(state, done, num)  # dispatched asynchronously
        if first_chunk and while_first_chunk_runs is not None:
            while_first_chunk_runs()
        first_chunk = False
        pending.append((done, metrics))
        before, done = done, done + num
        checkpoint = save is not None and (is_time(before, done, checkpoint_every) or done == total)
        milestone = on_milestone is not None and is_time(before, done, milestone_every)
        if checkpoint or milestone or done == total:
            for window in _log_windows(pending, done, log_every):
                flush(window)
            pending = []
        elif len(pending) > 1 and is_time(pending[-2][0], pending[-1][0], log_every):
            flush(pending[:-1])  # up to the chunk that reached a log step; the newest one keeps running
            pending = pending[-1:]
        if checkpoint:
            save(done, state)
        if milestone:
            on_milestone(done, state)
    return state


def _log_windows(pending: list, done: int, log_every: int) -> list[list]:
    """``pending`` cut after every chunk that reaches a log step, so each window is written as the steps it spans."""
    windows, current = [], []
    for index, (first, metrics) in enumerate(pending):
        current.append((first, metrics))
        end = pending[index + 1][0] if index + 1 < len(pending) else done
        if is_time(first, end, log_every) or end == done:
            windows.append(current)
            current = []
    return windows


def _units(metrics) -> int:
    return jax.tree.leaves(metrics)[0].shape[-1]
