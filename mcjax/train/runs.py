"""A config describes one run or many; runs become stacked per-run inputs of one vmapped program.

``config.sweep`` lists any of: ``seeds``, ``train_sparsity`` (constant levels), ``schedules`` (strings
``kind:p_start:p_end[:num_segments[:time_constant]]``) and ``train_sizes`` (nested training subsets). The runs are
their product; empty lists fall back to ``config.train.seed``, ``config.sparsity`` and ``config.data.train_size``.
Everything that differs between runs — seed, schedule, subset size, batch size, epochs, learning rate, beta and (in a
search) the network widths — is data (``RunSpec``), so runs that differ in any of them still share a program.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mcjax import schedules
from mcjax.errors import InputError
from mcjax.models.mcvae import PRIORS, Widths

WIDTH_FIELDS = ("keypoint_embedding_dim", "condition_embedding_dim", "hidden_dims", "latent_dim")


class RunSpec(NamedTuple):
    """Per-run inputs of the compiled training program (arrays; stacked along axis 0 for many runs)."""

    key: jax.Array  # base PRNG key of the run, from its seed
    schedule: schedules.ScheduleParams
    train_size: jax.Array  # int32: the run trains on the first train_size rows of its seeded subset order
    batch_size: jax.Array  # int32 rows per step (min of train.batch_size and train_size)
    steps_per_epoch: jax.Array  # int32
    epochs: jax.Array  # int32
    learning_rate: jax.Array  # float32
    beta: jax.Array  # float32 weight of the KL term
    widths: Widths | None  # the run's widths inside the program's network, None when every run uses config.model


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """One run as plain values: what ``RunSpec`` holds as arrays, plus the label reports show."""

    label: dict  # what tells the run apart in results (JSON-ready)
    seed: int
    schedule: ml_collections.ConfigDict
    train_size: int  # 0 = the whole training split
    batch_size: int
    epochs: int
    learning_rate: float
    beta: float
    widths: dict | None = None  # WIDTH_FIELDS overriding config.model for this run (a search trial)
    prior: str = "standard"  # the mcVAE's prior (config.model.prior unless the run sets it): runs of one prior share
    # a program


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Full batches per pass over a run's rows (the remainder waits for the next shuffle); a set smaller than a batch
    is one batch of all its rows, as a data loader would give."""
    return max(1, train_size // min(batch_size, train_size))


def parse_schedule(text: str, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``'linear:0.1:0.9'`` → a schedule config (missing fields from ``base``)."""
    parts = text.split(":")
    if not 1 <= len(parts) <= 5:
        raise InputError(f"Schedule {text!r}: expected kind:p_start:p_end[:num_segments[:time_constant]].")
    config = ml_collections.ConfigDict(base.to_dict())
    config.kind = parts[0]
    try:
        for field, value in zip(("p_start", "p_end", "num_segments", "time_constant"), parts[1:]):
            config[field] = int(value) if field == "num_segments" else float(value)
    except ValueError:
        raise InputError(f"Schedule {text!r}: numbers expected after the kind.") from None
    if len(parts) == 2:
        config.p_end = config.p_start
    schedules.schedule_params(config)  # validates
    return config


def schedule_label(config: ml_collections.ConfigDict) -> str:
    if config.kind == "constant":
        return f"constant:{config.p_start:g}"
    label = f"{config.kind}:{config.p_start:g}:{config.p_end:g}"
    return label + f":{config.num_segments}" if config.kind.endswith("step") else label


def run_settings(config: ml_collections.ConfigDict, seed: int, schedule: ml_collections.ConfigDict,
                 train_size: int, label: dict, **overrides) -> RunSettings:
    """A run with the config's training hyperparameters, except ``overrides`` (RunSettings fields)."""
    prior = overrides.get("prior", config.model.get("prior", "standard"))
    if prior not in PRIORS:
        raise InputError(f"Run {label}: unknown mcVAE prior {prior!r}; choose from {PRIORS}.")
    values = dict(label=label, seed=int(seed), schedule=schedule, train_size=int(train_size),
                  prior=prior,
                  batch_size=int(config.train.batch_size), epochs=int(config.train.epochs),
                  learning_rate=float(config.optimizer.learning_rate), beta=float(config.train.beta))
    return RunSettings(**{**values, **overrides})


RUN_FIELDS = ("train_sparsity", "schedule", "train_size", "batch_size", "epochs", "learning_rate", "beta", "prior")
LABEL_ONLY_FIELDS = ("trial",)


def explicit_run(config: ml_collections.ConfigDict, values: dict, seed: int) -> RunSettings:
    """A run of ``config.sweep.runs``: ``values`` overrides any of RUN_FIELDS and WIDTH_FIELDS (a search trial)."""
    unknown = sorted(set(values) - set(RUN_FIELDS + WIDTH_FIELDS + LABEL_ONLY_FIELDS))
    if unknown:
        raise InputError(f"sweep.runs: unknown field(s) {unknown}; allowed: {RUN_FIELDS + WIDTH_FIELDS}.")
    if "train_sparsity" in values:
        schedule = parse_schedule(f"constant:{values['train_sparsity']}", config.sparsity)
    else:
        schedule = parse_schedule(values["schedule"], config.sparsity) if "schedule" in values else config.sparsity
    widths = None
    if any(f in values for f in WIDTH_FIELDS):
        widths = {f: values.get(f, config.model[f]) for f in WIDTH_FIELDS}
        widths["hidden_dims"] = tuple(int(h) for h in widths["hidden_dims"])
        if min(widths["keypoint_embedding_dim"], widths["condition_embedding_dim"], widths["latent_dim"],
               *widths["hidden_dims"]) < 1:
            raise InputError(f"sweep.runs: widths must be >= 1, got {widths}.")
    casts = {"batch_size": int, "epochs": int, "learning_rate": float, "beta": float, "prior": str}
    overrides = {f: cast(values[f]) for f, cast in casts.items() if f in values}
    label = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()} | {"seed": int(seed)}
    return run_settings(config, seed, schedule, int(values.get("train_size", config.data.train_size)), label,
                        widths=widths, **overrides)


def expand_runs(config: ml_collections.ConfigDict) -> list[RunSettings]:
    """Every run the config describes: ``sweep.runs`` × seeds when runs are listed explicitly, else the product of
    schedules × train sizes × seeds."""
    sweep = config.get("sweep", ml_collections.ConfigDict())
    seeds = list(sweep.get("seeds", ())) or [config.train.seed]
    if sweep.get("runs", ()):
        return [explicit_run(config, dict(values), seed) for values, seed in itertools.product(sweep.runs, seeds)]
    schedule_configs = [parse_schedule(f"constant:{p}", config.sparsity) for p in sweep.get("train_sparsity", ())]
    schedule_configs += [parse_schedule(s, config.sparsity) for s in sweep.get("schedules", ())]
    schedule_configs = schedule_configs or [config.sparsity]
    sizes = list(sweep.get("train_sizes", ())) or [config.data.train_size]
    runs = []
    for schedule_config, size, seed in itertools.product(schedule_configs, sizes, seeds):
        label = {"schedule": schedule_label(schedule_config), "seed": int(seed)}
        if schedule_config.kind == "constant":
            label["train_sparsity"] = float(schedule_config.p_start)
        if size:
            label["dataset_size"] = int(size)
        runs.append(run_settings(config, seed, schedule_config, size, label))
    return runs


def _run_widths(runs: list[RunSettings], model_config: ml_collections.ConfigDict) -> list[dict]:
    return [run.widths or {f: model_config[f] for f in WIDTH_FIELDS} for run in runs]


def model_widths(runs: list[RunSettings], model_config: ml_collections.ConfigDict) -> dict:
    """The largest widths of ``runs`` (each field a maximum over runs; a run without widths uses the config's)."""
    per_run = _run_widths(runs, model_config)
    depths = {len(w["hidden_dims"]) for w in per_run}
    if len(depths) != 1:
        raise InputError(f"Runs of one program need the same number of hidden layers, got depths {sorted(depths)}.")
    return {"keypoint_embedding_dim": max(int(w["keypoint_embedding_dim"]) for w in per_run),
            "condition_embedding_dim": max(int(w["condition_embedding_dim"]) for w in per_run),
            "hidden_dims": tuple(int(max(h)) for h in zip(*(w["hidden_dims"] for w in per_run))),
            "latent_dim": max(int(w["latent_dim"]) for w in per_run)}


def stack_runs(runs: list[RunSettings], num_train_rows: int, model_config: ml_collections.ConfigDict) -> RunSpec:
    """The stacked RunSpec of ``runs`` (train size 0 → all ``num_train_rows``)."""
    sizes = [run.train_size or num_train_rows for run in runs]
    for size, run in zip(sizes, runs):
        if not 1 <= size <= num_train_rows:
            raise InputError(f"Run {run.label}: the training subset size must be in [1, {num_train_rows}] (the "
                             f"training rows), got {size}.")
    # Host arrays (the keys apart): the stage's programs take them as arguments, so eager JAX ops here, each compiled
    # on first use, would only delay the start (0.45 s for the Table-1 run; padding them per device cost 0.33 s more).
    widths = None
    if any(run.widths for run in runs):
        per_run = _run_widths(runs, model_config)
        widths = Widths(np.asarray([w["keypoint_embedding_dim"] for w in per_run], np.int32),
                        np.asarray([w["condition_embedding_dim"] for w in per_run], np.int32),
                        tuple(np.asarray(h, np.int32) for h in zip(*(w["hidden_dims"] for w in per_run))),
                        np.asarray([w["latent_dim"] for w in per_run], np.int32))
    schedule = jax.tree.map(lambda *xs: np.stack(xs), *[schedules.schedule_params(run.schedule) for run in runs])
    return RunSpec(
        key=jnp.stack([jax.random.key(run.seed) for run in runs]),
        schedule=schedule,
        train_size=np.asarray(sizes, np.int32),
        batch_size=np.asarray([min(run.batch_size, n) for run, n in zip(runs, sizes)], np.int32),
        steps_per_epoch=np.asarray([steps_per_epoch(n, run.batch_size) for run, n in zip(runs, sizes)], np.int32),
        epochs=np.asarray([run.epochs for run in runs], np.int32),
        learning_rate=np.asarray([run.learning_rate for run in runs], np.float32),
        beta=np.asarray([run.beta for run in runs], np.float32),
        widths=widths,
    )

