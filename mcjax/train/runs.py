"""A config describes one run or a sweep of runs; a sweep becomes stacked per-run inputs for one vmapped program.

``config.sweep`` lists any of: ``seeds``, ``train_sparsity`` (constant levels) and ``schedules`` (strings
``kind:p_start:p_end[:num_segments[:time_constant]]``). The runs are their product; empty lists fall back to
``config.train.seed`` and ``config.sparsity``.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from mcjax import schedules


class RunSpec(NamedTuple):
    """Per-run inputs of the compiled training program (arrays; stacked along axis 0 for a sweep)."""

    key: jax.Array  # base PRNG key of the run, from its seed
    schedule: schedules.ScheduleParams


def parse_schedule(text: str, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``'linear:0.1:0.9'`` → a schedule config (missing fields from ``base``)."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 5:
        raise ValueError(f"Schedule {text!r}: expected kind:p_start:p_end[:num_segments[:time_constant]].")
    config = ml_collections.ConfigDict(base.to_dict())
    config.kind = parts[0]
    try:
        for field, value in zip(("p_start", "p_end", "num_segments", "time_constant"), parts[1:]):
            config[field] = int(value) if field == "num_segments" else float(value)
    except ValueError:
        raise ValueError(f"Schedule {text!r}: numbers expected after the kind.") from None
    if len(parts) == 2:
        config.p_end = config.p_start
    return config


def schedule_label(config: ml_collections.ConfigDict) -> str:
    if config.kind == "constant":
        return f"constant:{config.p_start:g}"
    return f"{config.kind}:{config.p_start:g}:{config.p_end:g}"


def expand_runs(config: ml_collections.ConfigDict) -> tuple[list[dict], RunSpec]:
    """Labels (one dict per run) and the stacked RunSpec of every run the config describes."""
    sweep = config.get("sweep", ml_collections.ConfigDict())
    seeds = list(sweep.get("seeds", ())) or [config.train.seed]
    schedule_configs = [parse_schedule(f"constant:{p}", config.sparsity) for p in sweep.get("train_sparsity", ())]
    schedule_configs += [parse_schedule(s, config.sparsity) for s in sweep.get("schedules", ())]
    schedule_configs = schedule_configs or [config.sparsity]
    labels, keys, params = [], [], []
    for schedule_config, seed in itertools.product(schedule_configs, seeds):
        labels.append({"schedule": schedule_label(schedule_config), "seed": int(seed)})
        keys.append(jax.random.key(int(seed)))
        params.append(schedules.schedule_params(schedule_config))
    return labels, RunSpec(jnp.stack(keys), jax.tree.map(lambda *xs: jnp.stack(xs), *params))
