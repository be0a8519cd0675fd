"""``train_and_evaluate(config, workdir)``: table → stages of vmapped, compiled training → checkpoints → reports.

Workdir layout: ``config.json``, ``stats.json`` (training-split statistics and vocabularies), ``runs.json`` (one label
per run), ``stages.json`` (the runs of each stage and the widths its network was built at), ``checkpoints/<stage>/``
(orbax), ``metrics.jsonl`` + ``tensorboard/``, ``eval.json`` + ``mse_vs_sparsity.png``, ``results.json`` +
``results.md`` (+ the experiment's plots, see ``mcjax.report``). Running again on the same workdir resumes from each
stage's newest checkpoint; finished stages are only restored.
"""

from __future__ import annotations

import json
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mcjax import evaluate, report
from mcjax.data import tables
from mcjax.io import atomic_write_text
from mcjax.models.vae import MCVAE, model_from_config
from mcjax.train import checkpoints
from mcjax.train import vae as vae_train
from mcjax.train.metrics import MetricWriter, ProgressBar
from mcjax.train.runs import (
    WIDTH_FIELDS,
    RunSettings,
    RunSpec,
    expand_runs,
    model_widths,
    stack_runs,
    steps_per_epoch,
)

# Fields that may change between a run and its resumption (they do not change the result).
_RESUMABLE_FIELDS = {("train", "epochs_per_chunk"), ("train", "checkpoint_every_epochs"), ("train", "progress"),
                     ("train", "tensorboard"), ("eval",), ("report",), ("compilation_cache_dir",),
                     ("train", "steps_per_chunk"), ("train", "log_every_steps"), ("train", "checkpoint_every_steps"),
                     ("autoencoder", "steps_per_chunk"), ("autoencoder", "latent_batch_size")}


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache, so a second run of the same program skips compilation."""
    if directory:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _comparable(config_dict: dict, prefix=()) -> dict:
    out = {}
    for key, value in config_dict.items():
        path = prefix + (key,)
        if any(path[: len(r)] == r for r in _RESUMABLE_FIELDS):
            continue
        out.update(_comparable(value, path) if isinstance(value, dict) else {path: value})
    return out


def check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
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


class Stage(NamedTuple):
    """Runs trained together as one vmapped program: those with the same number of steps per epoch, so lockstep
    costs little. Stages of equal shapes (e.g. the dataset sizes of one experiment) reuse one compiled program."""

    index: int
    run_indices: tuple[int, ...]  # positions in the experiment's run list
    model: MCVAE  # at the largest widths of the stage's runs
    trainer: vae_train.Trainer
    runs: RunSpec  # stacked, one per run index


def plan_stages(config: ml_collections.ConfigDict, settings: list[RunSettings], data: tables.TableData) -> list[Stage]:
    """Groups the runs by steps per epoch, in order of first appearance."""
    num_rows = len(data.train_x_NxD)
    groups: dict[int, list[int]] = {}
    for i, run in enumerate(settings):
        groups.setdefault(steps_per_epoch(run.train_size or num_rows, run.batch_size), []).append(i)
    stages = []
    for index, run_indices in enumerate(groups.values()):
        members = [settings[i] for i in run_indices]
        model_config = ml_collections.ConfigDict({**config.model.to_dict(), **model_widths(members, config.model)})
        model = model_from_config(model_config, data.stats.conditions, len(data.stats.keypoint_columns))
        runs = stack_runs(members, num_rows, config.model)
        stages.append(Stage(index, tuple(run_indices), model, vae_train.make_trainer(model, config, runs), runs))
    return stages


def run_mesh(num_runs: int) -> Mesh:
    """A mesh over the local devices for a stage's runs: all of them, or one per run when there are fewer runs. On a
    CPU ``train.py`` exposes one device per core (measured on 2 cores: a 50-run sweep trains 1.7x faster than on one
    device); on a GPU/TPU machine every accelerator takes a share of the runs."""
    devices = jax.local_devices()[: min(num_runs, jax.local_device_count())]
    return Mesh(np.asarray(devices), (vae_train.RUN_AXIS,))


def _pad(tree, multiple: int):
    """Repeats the last run so the run count divides evenly over the devices (the copies' results are dropped)."""
    num = len(jax.tree.leaves(tree)[0])
    index = np.minimum(np.arange(-(-num // multiple) * multiple), num - 1)
    return jax.tree.map(lambda a: a[index], tree)


def _host(tree, num_runs: int):
    """The first ``num_runs`` runs as host arrays (device-independent, as checkpoints are stored)."""
    return jax.tree.map(lambda a: np.asarray(a)[:num_runs], tree)


def _train_arrays(data: tables.TableData) -> vae_train.TrainData:
    return vae_train.TrainData(jnp.asarray(data.train_x_NxD), jax.tree.map(jnp.asarray, data.train_conditions))


def _raise_if_nonfinite(metrics, labels) -> None:
    bad = np.asarray(metrics["nonfinite_step"])
    runs, epochs = np.nonzero(bad >= 0)
    if len(runs):
        r, e = runs[0], epochs[0]
        raise FloatingPointError(f"Training stopped: the loss became NaN/inf at step {int(bad[r, e])} of run "
                                 f"{labels[r]}. The last checkpoint before it is kept; lower the learning rate or "
                                 f"check the data.")


def _write_metrics(writer: MetricWriter, metrics, stage: Stage, first_epoch: int, num_epochs: int, tag: str,
                   label_runs: bool):
    """One JSON line per epoch and run (labelled with the run's index in a multi-run experiment, at the run's own
    step); TensorBoard gets the mean over the runs that trained that epoch."""
    trained = np.asarray(metrics["trained"])
    values = {k: np.asarray(v) for k, v in metrics.items() if k in vae_train.METRICS}
    steps_per_epoch = np.asarray(stage.runs.steps_per_epoch)
    for e in range(num_epochs):
        for r, run_index in enumerate(stage.run_indices):
            if trained[r, e]:
                writer.write((first_epoch + e + 1) * int(steps_per_epoch[r]), {k: v[r, e] for k, v in values.items()},
                             **({"run": run_index} if label_runs else {}))
        if trained[:, e].any():
            writer.summarise(first_epoch + e + 1, {tag + k: v[trained[:, e], e].mean() for k, v in values.items()})


class Trained(NamedTuple):
    """What ``train`` returns: the data, the stages and each stage's trained parameters (stacked over its runs)."""

    data: tables.TableData
    settings: list[RunSettings]
    stages: list[Stage]
    params: list


def prepare_experiment(config: ml_collections.ConfigDict):
    """Data, run settings and stages for ``config`` (no training)."""
    table = tables.table_from_config(config.data)
    data = tables.prepare_table(table, config.data.test_fraction, config.data.split_seed)
    if config.data.get("validation_fraction", 0.0):
        data = tables.holdout_validation(data, config.data.validation_fraction, config.data.split_seed)
    vae_train.validate_train_config(config, len(data.train_x_NxD))
    settings = expand_runs(config)
    return data, settings, plan_stages(config, settings, data)


def _stage_manifest(stages: list[Stage]) -> str:
    """``stages.json``: which runs each stage holds and the widths its network was built at (for ``load_run``)."""
    return json.dumps([{"runs": list(stage.run_indices),
                        "model": {f: getattr(stage.model, f) for f in WIDTH_FIELDS}}
                       for stage in stages], indent=1)


def train(config: ml_collections.ConfigDict, workdir: str) -> Trained:
    """Trains (or resumes) every run of ``config``, stage after stage; a finished stage is only restored."""
    enable_compilation_cache(config.get("compilation_cache_dir", ""))
    data, settings, stages = prepare_experiment(config)
    os.makedirs(workdir, exist_ok=True)
    check_same_run(workdir, config)
    atomic_write_text(os.path.join(workdir, "config.json"), config.to_json(indent=1))
    atomic_write_text(os.path.join(workdir, "stats.json"), data.stats.to_json())
    atomic_write_text(os.path.join(workdir, "runs.json"), json.dumps([s.label for s in settings], indent=1))
    atomic_write_text(os.path.join(workdir, "stages.json"), _stage_manifest(stages))
    print(f"mcjax: {len(settings)} run(s) in {len(stages)} stage(s) on {jax.local_device_count()} "
          f"{jax.local_devices()[0].platform} device(s); {len(data.train_x_NxD)} train / {len(data.test_x_NxD)} test "
          f"rows", flush=True)
    writer = MetricWriter(workdir, tensorboard=config.train.tensorboard)
    started = time.perf_counter()
    try:
        params = [train_stage(config, workdir, data, stage, settings, writer, len(stages)) for stage in stages]
    finally:
        writer.close()
    print(f"mcjax: trained in {time.perf_counter() - started:.1f}s", flush=True)
    return Trained(data, settings, stages, params)


def stage_checkpoints(workdir: str, stage_index: int):
    return checkpoints.manager(os.path.join(workdir, "checkpoints", str(stage_index)))


def train_stage(config, workdir: str, data: tables.TableData, stage: Stage, settings: list[RunSettings],
                writer: MetricWriter, num_stages: int = 1):
    """Trains (or resumes) one stage; returns its parameters stacked over its runs (host arrays)."""
    trainer, num_runs = stage.trainer, len(stage.run_indices)
    labels = [settings[i].label for i in stage.run_indices]
    mesh = run_mesh(num_runs)
    per_run, shared = NamedSharding(mesh, P(vae_train.RUN_AXIS)), NamedSharding(mesh, P())
    runs = jax.device_put(_pad(stage.runs, mesh.size), per_run)
    train_data = jax.device_put(_train_arrays(data), shared)
    state = vae_train.init_states(trainer, runs, train_data, mesh)
    manager = stage_checkpoints(workdir, stage.index)
    restored = checkpoints.restore_latest(manager, _host(state, num_runs))
    if restored is not None:
        state = jax.device_put(_pad(restored, mesh.size), per_run)
    epochs_done = int(np.max(np.asarray(restored.epoch))) if restored is not None else 0
    if epochs_done < trainer.epochs:
        print(f"mcjax: stage {stage.index + 1}/{num_stages}: {num_runs} run(s) × up to {trainer.epochs} epochs × "
              f"{int(np.max(stage.runs.steps_per_epoch))} steps of {trainer.batch_size} rows on {mesh.size} "
              f"device(s)", flush=True)
    chunk = max(1, int(config.train.epochs_per_chunk))
    train_chunk = vae_train.compiled_train_epochs(trainer, chunk, mesh)
    label = f"stage {stage.index + 1}/{num_stages} epochs" if num_stages > 1 else "epochs"
    progress = ProgressBar(trainer.epochs, label, enabled=config.train.progress)
    every = max(1, int(config.train.checkpoint_every_epochs))
    tag = f"stage_{stage.index}/" if num_stages > 1 else ""
    try:
        while epochs_done < trainer.epochs:
            num = min(chunk, trainer.epochs - epochs_done)
            # Dispatched asynchronously: the host set-up below overlaps the chunk.
            state, metrics = train_chunk(state, runs, train_data, jax.device_put(np.int32(num), shared))
            writer.prepare()  # these imports (≈ 2.5 s) overlap the first chunk
            evaluate.pyplot()
            metrics = {k: v[:, :num] for k, v in _host(metrics, num_runs).items()}
            if config.train.stop_on_nonfinite:
                _raise_if_nonfinite(metrics, labels)
            _write_metrics(writer, metrics, stage, epochs_done, num, tag, len(settings) > 1)
            crossed = (epochs_done + num) // every > epochs_done // every
            epochs_done += num
            if crossed or epochs_done == trainer.epochs:
                checkpoints.save(manager, epochs_done, _host(state, num_runs))
            trained = metrics["trained"][:, -1]
            progress.update(epochs_done, f"loss {float(np.nanmean(metrics['loss'][trained, -1])):.4f}")
    finally:
        manager.close()
    return _host(state.params, num_runs)


def evaluate_stages(config, trained: Trained) -> dict:
    """Every run on the test split (stage by stage), joined in run order: numpy arrays with a leading run axis."""
    levels = tuple(config.eval.inference_sparsity)
    data = trained.data
    x, conditions = jnp.asarray(data.test_x_NxD), jax.tree.map(jnp.asarray, data.test_conditions)
    per_stage = [evaluate.evaluate_runs(stage.model, params, x, conditions, jax.random.key(config.eval.seed), levels,
                                        config.eval.num_draws, stage.runs.widths)
                 for stage, params in zip(trained.stages, trained.params)]
    order = np.argsort(np.concatenate([stage.run_indices for stage in trained.stages]))
    return jax.tree.map(lambda *parts: np.concatenate(parts)[order], *per_stage)


def evaluate_and_report(config, workdir: str, trained: Trained) -> dict:
    """Evaluates every run, writes eval.json, results.json/md and the plots, prints the table."""
    results = evaluate_stages(config, trained)
    levels = tuple(config.eval.inference_sparsity)
    labels = [s.label for s in trained.settings]
    stats = trained.data.stats
    summary = evaluate.summarise(results, labels, levels, stats.keypoint_columns, stats.keypoint_scale)
    evaluate.write_report(summary, workdir)
    report.write_results(summary, config, workdir)
    print(evaluate.format_table(summary), flush=True)
    return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The whole job of ``train.py``: train (or resume) every run, evaluate, write the reports; returns eval.json's
    content."""
    return evaluate_and_report(config, workdir, train(config, workdir))
