"""``train_and_evaluate(config, workdir)``: table → vmapped compiled training → checkpoints → eval.json.

Workdir layout: ``config.json``, ``stats.json`` (training-split statistics and vocabularies), ``runs.json`` (one label
per run), ``checkpoints/`` (orbax), ``metrics.jsonl`` + ``tensorboard/``, ``eval.json`` + ``mse_vs_sparsity.png``.
Running again on the same workdir resumes from the newest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mcjax import evaluate
from mcjax.data import tables
from mcjax.models.vae import MCVAE, model_from_config
from mcjax.train import checkpoints
from mcjax.train import vae as vae_train
from mcjax.train.metrics import MetricWriter, ProgressBar
from mcjax.train.runs import expand_runs

# Fields that may change between a run and its resumption (they do not change the result).
_RESUMABLE_FIELDS = {("train", "epochs_per_chunk"), ("train", "checkpoint_every_epochs"), ("train", "progress"),
                     ("train", "tensorboard"), ("eval",), ("compilation_cache_dir",)}


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache, so a second run of the same program skips compilation."""
    if directory:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _atomic_write(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _comparable(config_dict: dict, prefix=()) -> dict:
    out = {}
    for key, value in config_dict.items():
        path = prefix + (key,)
        if any(path[: len(r)] == r for r in _RESUMABLE_FIELDS):
            continue
        out.update(_comparable(value, path) if isinstance(value, dict) else {path: value})
    return out


def _check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuses to resume a workdir that holds a different experiment."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        stored = _comparable(json.load(f))
    current = _comparable(json.loads(config.to_json()))
    changed = sorted(".".join(k) for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if changed:
        raise ValueError(f"Workdir {workdir} holds a run with a different config ({', '.join(changed)}); "
                         f"use a new --workdir or restore those values.")


def run_sharding(num_runs: int) -> tuple[NamedSharding, NamedSharding]:
    """(runs split over devices, replicated) shardings on a 1-D mesh of the local devices.

    Runs are independent, so a sweep splits over as many devices as evenly divide it and each device trains its share
    with no communication; a single run uses one device. On a CPU, ``train.py`` exposes one device per core.
    """
    num_devices = math.gcd(num_runs, jax.local_device_count())
    mesh = jax.make_mesh((num_devices,), ("runs",), devices=jax.local_devices()[:num_devices],
                         axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, P("runs")), NamedSharding(mesh, P())


def _to_device(data: tables.TableData, replicated=None) -> vae_train.TrainData:
    arrays = vae_train.TrainData(data.train_x_NxD, data.train_conditions)
    return jax.device_put(arrays, replicated) if replicated is not None else jax.tree.map(jnp.asarray, arrays)


def _raise_if_nonfinite(metrics, labels) -> None:
    bad = np.asarray(metrics["nonfinite_step"])
    runs, epochs = np.nonzero(bad >= 0)
    if len(runs):
        r, e = runs[0], epochs[0]
        raise FloatingPointError(f"Training stopped: the loss became NaN/inf at step {int(bad[r, e])} of run "
                                 f"{labels[r]}. The last checkpoint before it is kept; lower the learning rate or "
                                 f"check the data.")


def _write_metrics(writer: MetricWriter, metrics, num_runs: int, first_epoch: int, num_epochs: int,
                   steps_per_epoch: int):
    """One record per epoch (and per run of a sweep, labelled ``run``)."""
    metrics = {k: np.asarray(v) for k, v in metrics.items() if k != "nonfinite_step"}
    for e in range(num_epochs):
        step = (first_epoch + e + 1) * steps_per_epoch
        for r in range(num_runs):
            labels = {"run": r} if num_runs > 1 else {}
            writer.write(step, {k: v[r, e] for k, v in metrics.items()}, **labels)


def prepare_experiment(config: ml_collections.ConfigDict):
    """Data, model, trainer and run specs for ``config`` (no training)."""
    table = tables.table_from_config(config.data)
    data = tables.prepare_table(table, config.data.test_fraction, config.data.split_seed)
    if config.data.train_size:
        data = tables.nested_subset(data, config.data.train_size, config.data.split_seed)
    model = model_from_config(config.model, data.stats.conditions, len(data.stats.keypoint_columns))
    trainer = vae_train.make_trainer(model, config, len(data.train_x_NxD))
    labels, runs = expand_runs(config)
    return data, model, trainer, labels, runs


def train(config: ml_collections.ConfigDict, workdir: str):
    """Trains (or resumes) every run of ``config``; returns (data, model, labels, stacked params)."""
    enable_compilation_cache(config.get("compilation_cache_dir", ""))
    data, model, trainer, labels, runs = prepare_experiment(config)
    os.makedirs(workdir, exist_ok=True)
    _check_same_run(workdir, config)
    _atomic_write(os.path.join(workdir, "config.json"), config.to_json(indent=1))
    _atomic_write(os.path.join(workdir, "stats.json"), data.stats.to_json())
    _atomic_write(os.path.join(workdir, "runs.json"), json.dumps(labels, indent=1))
    split, replicated = run_sharding(len(labels))
    print(f"mcjax: {len(labels)} run(s) × {trainer.total_steps} steps ({trainer.epochs} epochs × "
          f"{trainer.steps_per_epoch}) on {split.mesh.devices.size} of {jax.device_count()} device(s) "
          f"({jax.devices()[0].platform}); {len(data.train_x_NxD)} train / {len(data.test_x_NxD)} test rows",
          flush=True)

    train_data = _to_device(data, replicated)
    runs = jax.device_put(runs, split)
    state = vae_train.init_states(trainer, runs, train_data)
    manager = checkpoints.manager(os.path.join(workdir, "checkpoints"))
    restored = checkpoints.restore_latest(manager, state)
    if restored is not None:
        state = restored
    epochs_done = int(np.asarray(state.step)[0]) // trainer.steps_per_epoch

    chunk = max(1, int(config.train.epochs_per_chunk))
    train_chunk = vae_train.compiled_train_epochs(trainer, chunk)
    writer = None
    progress = ProgressBar(trainer.epochs, "epochs", enabled=config.train.progress)
    every = max(1, int(config.train.checkpoint_every_epochs))
    started = time.perf_counter()
    try:
        while epochs_done < trainer.epochs:
            num = min(chunk, trainer.epochs - epochs_done)
            state, metrics = train_chunk(state, runs, train_data, jax.device_put(jnp.int32(num), replicated))
            if writer is None:  # created while the first chunk runs: its imports (≈ 1.5 s) overlap the training
                writer = MetricWriter(workdir, tensorboard=config.train.tensorboard)
            metrics = {k: np.asarray(m)[:, :num] for k, m in metrics.items()}
            _raise_if_nonfinite(metrics, labels)
            _write_metrics(writer, metrics, len(labels), epochs_done, num, trainer.steps_per_epoch)
            crossed = (epochs_done + num) // every > epochs_done // every
            epochs_done += num
            if crossed or epochs_done == trainer.epochs:
                checkpoints.save(manager, epochs_done * trainer.steps_per_epoch, state)
            progress.update(epochs_done, f"loss {float(np.mean(metrics['loss'][:, -1])):.4f}")
    finally:
        if writer is not None:
            writer.close()
        manager.close()
    print(f"mcjax: trained in {time.perf_counter() - started:.1f}s", flush=True)
    return data, model, labels, state.params


def evaluate_and_report(config, workdir: str, data: tables.TableData, model: MCVAE, labels, params_R) -> dict:
    """Evaluates every run on the test split, writes eval.json and the plot, prints the table."""
    levels = tuple(config.eval.inference_sparsity)
    _, replicated = run_sharding(len(labels))
    test_x, test_conditions = jax.device_put((data.test_x_NxD, data.test_conditions), replicated)
    results = evaluate.evaluate_runs(model, params_R, test_x, test_conditions,
                                     jax.device_put(jax.random.key(config.eval.seed), replicated), levels,
                                     config.eval.num_draws)
    scale = np.asarray(data.stats.keypoint_max) - np.asarray(data.stats.keypoint_min)
    summary = evaluate.summarise(results, labels, levels, data.stats.keypoint_columns, scale)
    evaluate.write_report(summary, workdir)
    print(evaluate.format_table(summary), flush=True)
    return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The whole job of ``train.py``: train (or resume) every run, evaluate, write eval.json; returns its content."""
    data, model, labels, params = train(config, workdir)
    return evaluate_and_report(config, workdir, data, model, labels, params)
