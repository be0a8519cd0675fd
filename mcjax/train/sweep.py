"""``train_and_evaluate(config, workdir)``: table → stages of vmapped, compiled training → checkpoints → reports.

Workdir layout (besides ``mcjax.run_dir``'s): ``runs.json`` (one label per run), ``checkpoints/<stage>/`` (orbax),
``eval.json`` +
``mse_vs_sparsity.png``, ``results.json`` + ``results.md`` (+ the experiment's plots, see ``mcjax.eval.report``), and
the inference bundle with every run's parameters. Running again on the same workdir resumes from each stage's newest
checkpoint; finished stages are only restored.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mcjax import run_dir
from mcjax.compile import compile_loop
from mcjax.data import tables
from mcjax.eval import mcvae as evaluation
from mcjax.eval import report
from mcjax.io import atomic_write_text
from mcjax.models.mcvae import MCVAE, mcvae_from_config
from mcjax.train import loop
from mcjax.train import mcvae as mcvae_train
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


class Stage(NamedTuple):
    """Runs trained together as one vmapped program: those with the same number of steps per epoch, so lockstep
    costs little. Stages of equal shapes (e.g. the dataset sizes of one experiment) reuse one compiled program."""

    index: int
    run_indices: tuple[int, ...]  # positions in the experiment's run list
    model: MCVAE  # at the largest widths of the stage's runs
    trainer: mcvae_train.MCVAETrainer
    runs: RunSpec  # stacked, one per run index


def plan_stages(config: ml_collections.ConfigDict, settings: list[RunSettings], data: tables.TableData) -> list[Stage]:
    """Groups the runs by steps per epoch and prior, in order of first appearance."""
    num_rows = len(data.train_x_NxD)
    groups: dict[tuple[int, str], list[int]] = {}
    for i, run in enumerate(settings):
        groups.setdefault((steps_per_epoch(run.train_size or num_rows, run.batch_size), run.prior), []).append(i)
    stages = []
    for index, ((_, prior), run_indices) in enumerate(groups.items()):
        members = [settings[i] for i in run_indices]
        model_config = ml_collections.ConfigDict({**config.model.to_dict(), **model_widths(members, config.model),
                                                  "prior": prior})
        model = mcvae_from_config(model_config, data.stats.conditions, len(data.stats.keypoint_columns))
        runs = stack_runs(members, num_rows, config.model)
        stages.append(Stage(index, tuple(run_indices), model, mcvae_train.make_trainer(model, config, runs,
                                                                                   data.stats.label_rates), runs))
    return stages


def run_mesh(num_runs: int) -> Mesh:
    """A mesh over the local devices for a stage's runs: all of them, or one per run when there are fewer runs. On a
    CPU ``train.py`` exposes one device per core (measured on 2 cores: a 50-run sweep trains 1.7x faster than on one
    device); on a GPU/TPU machine every accelerator takes a share of the runs."""
    devices = jax.local_devices()[: min(num_runs, jax.local_device_count())]
    return Mesh(np.asarray(devices), (mcvae_train.RUN_AXIS,))


def _pad(tree, multiple: int):
    """Repeats the last run so the run count divides evenly over the devices (the copies' results are dropped)."""
    num = len(jax.tree.leaves(tree)[0])
    if num % multiple == 0:  # nothing to repeat, and no gather of the keys to compile (0.3 s)
        return tree
    index = np.minimum(np.arange(-(-num // multiple) * multiple), num - 1)
    return jax.tree.map(lambda a: a[index], tree)


def _host(tree, num_runs: int):
    """The first ``num_runs`` runs as host arrays (device-independent, as checkpoints are stored)."""
    return jax.tree.map(lambda a: np.asarray(a)[:num_runs], tree)


def _train_arrays(data: tables.TableData) -> mcvae_train.MCVAEData:
    return mcvae_train.MCVAEData(jnp.asarray(data.train_x_NxD), jax.tree.map(jnp.asarray, data.train_conditions))


def _write_metrics(writer: MetricWriter, metrics, stage: Stage, first_epoch: int, num_epochs: int, tag: str,
                   label_runs: bool):
    """One JSON line per epoch and run (labelled with the run's index in a multi-run experiment, at the run's own
    step); TensorBoard gets the mean over the runs that trained that epoch."""
    trained = np.asarray(metrics["trained"])
    names = mcvae_train.metric_names(stage.model.latent_dim)
    values = {k: np.asarray(v) for k, v in metrics.items() if k in names}
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
    # stage index -> Future of its compiled evaluation program, compiled in a thread while the stage trained
    evaluations: dict[int, Future] | None = None


def prepare_experiment(config: ml_collections.ConfigDict):
    """Data, run settings and stages for ``config`` (no training)."""
    table = tables.table_from_config(config.data)
    data = tables.prepare_table(table, config.data.test_fraction, config.data.split_seed)
    if config.data.get("validation_fraction", 0.0):
        data = tables.holdout_validation(data, config.data.validation_fraction, config.data.split_seed)
    mcvae_train.validate_train_config(config, len(data.train_x_NxD))
    settings = expand_runs(config)
    return data, settings, plan_stages(config, settings, data)


def train(config: ml_collections.ConfigDict, workdir: str) -> Trained:
    """Trains (or resumes) every run of ``config``, stage after stage; a finished stage is only restored."""
    data, settings, stages = prepare_experiment(config)
    run_dir.start(workdir, config, data.stats.to_json())
    atomic_write_text(os.path.join(workdir, "runs.json"), json.dumps([s.label for s in settings], indent=1))
    print(f"mcjax: {len(settings)} run(s) in {len(stages)} stage(s) on {jax.local_device_count()} "
          f"{jax.local_devices()[0].platform} device(s); {len(data.train_x_NxD)} train / {len(data.test_x_NxD)} test "
          f"rows; {data.stats.label_rate_text()}", flush=True)
    writer = MetricWriter(workdir, tensorboard=config.train.tensorboard)
    started = time.perf_counter()
    # The evaluation compiles on the other core while training runs (a single run keeps one core busy).
    evaluations = {}

    def compile_later(stage: Stage, params_R) -> None:
        evaluations[stage.index] = _compile_in_thread(lambda: compile_evaluation(config, data, stage, params_R))

    try:
        params = [train_stage(config, workdir, data, stage, settings, writer, len(stages), compile_later)
                  for stage in stages]
    finally:
        writer.close()
    print(f"mcjax: trained in {time.perf_counter() - started:.1f}s", flush=True)
    return Trained(data, settings, stages, params, evaluations)


def _compile_in_thread(compile_program: Callable) -> Future:
    """``compile_program()`` in a thread of its own (XLA releases the GIL while it compiles)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="mcjax-compile")
    try:
        return pool.submit(compile_program)
    finally:
        pool.shutdown(wait=False)


def train_stage(config, workdir: str, data: tables.TableData, stage: Stage, settings: list[RunSettings],
                writer: MetricWriter, num_stages: int = 1, while_training: Callable | None = None):
    """Trains (or resumes) one stage; returns its parameters stacked over its runs (host arrays).
    ``while_training(stage, params_R)`` (``params_R`` as ``jax.ShapeDtypeStruct``s) runs once the first chunk is
    dispatched, if the stage trains at all."""
    trainer, num_runs = stage.trainer, len(stage.run_indices)
    labels = [settings[i].label for i in stage.run_indices]
    mesh = run_mesh(num_runs)
    per_run, shared = NamedSharding(mesh, P(mcvae_train.RUN_AXIS)), NamedSharding(mesh, P())
    runs = jax.device_put(_pad(stage.runs, mesh.size), per_run)
    train_data = jax.device_put(_train_arrays(data), shared)
    chunk_size = max(1, int(config.train.epochs_per_chunk))
    train_chunk = mcvae_train.compiled_train_epochs(trainer, chunk_size, mesh)
    checkpoints = os.path.join(workdir, run_dir.CHECKPOINTS, str(stage.index))
    # Only a stage with checkpoints may be done already; for a new one orbax loads (0.4 s) while its program compiles.
    manager = run_dir.checkpoint_manager(checkpoints) if os.path.isdir(checkpoints) else None
    program = None
    if manager is None or (manager.latest_step() or 0) < trainer.epochs:
        # Traced and lowered here, before the init: tracing is Python, and beside the init's it took twice as long.
        # XLA then compiles it on the other core while the parameters initialise.
        lowered = train_chunk.lower(mcvae_train.abstract_states(trainer, runs, train_data, mesh), runs, train_data,
                                    jax.ShapeDtypeStruct((), jnp.int32, sharding=shared))
        program = _compile_in_thread(lambda: compile_loop(lowered))
    if manager is None:
        manager = run_dir.checkpoint_manager(checkpoints)
    state = mcvae_train.init_states(trainer, runs, train_data, mesh)
    restored = run_dir.restore_latest(manager, _host(state, num_runs))
    if restored is not None:
        state = jax.device_put(_pad(restored, mesh.size), per_run)
    epochs_done = int(np.max(np.asarray(restored.epoch))) if restored is not None else 0
    if epochs_done < trainer.epochs:
        print(f"mcjax: stage {stage.index + 1}/{num_stages}: {num_runs} run(s) × up to {trainer.epochs} epochs × "
              f"{int(np.max(stage.runs.steps_per_epoch))} steps of {trainer.batch_size} rows on {mesh.size} "
              f"device(s)", flush=True)
    tag = f"stage_{stage.index}/" if num_stages > 1 else ""

    def chunk(state, first, num):
        state, metrics = program.result()(state, runs, train_data, jax.device_put(np.int32(num), shared))
        return state, {k: v[:num_runs, :num] for k, v in metrics.items()}

    def log(first, end, metrics):
        _write_metrics(writer, metrics, stage, first, end - first, tag, len(settings) > 1)
        trained = metrics["trained"][:, -1]
        return float(np.nanmean(metrics["loss"][trained, -1]))

    abstract_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct((num_runs, *a.shape[1:]), a.dtype), state.params)

    def warm_up():  # work that overlaps the first chunk: matplotlib's import, starting the evaluation's compilation
        if while_training is not None:
            while_training(stage, abstract_params)
        report.figure(1, 1)

    label = f"stage {stage.index + 1}/{num_stages} epochs" if num_stages > 1 else "epochs"
    try:
        state = loop.run(state, epochs_done, trainer.epochs, chunk, chunk_size=chunk_size, log=log,
                         checkpoint_every=max(1, int(config.train.checkpoint_every_epochs)),
                         save=lambda epochs, state: run_dir.save_checkpoint(manager, epochs, _host(state, num_runs)),
                         progress=ProgressBar(trainer.epochs, label, enabled=config.train.progress), name="mcVAE",
                         run_labels=labels, check_finite=config.train.stop_on_nonfinite,
                         while_first_chunk_runs=warm_up)
    finally:
        manager.close()
    return _host(state.params, num_runs)


def class_targets(config, data: tables.TableData) -> evaluation.ClassTargets | None:
    return evaluation.class_targets(data.stats.conditions, data.train_x_NxD, data.train_conditions,
                                    int(config.eval.get("class_min_rows", 20)))


def compile_evaluation(config, data: tables.TableData, stage: Stage, params_R):
    """The evaluation program of ``stage`` for parameters shaped like ``params_R`` (``evaluate_stages`` runs it)."""
    targets = class_targets(config, data)
    return evaluation.compile_evaluation(
        stage.model, params_R, jnp.asarray(data.test_x_NxD), jax.tree.map(jnp.asarray, data.test_conditions),
        jax.random.key(config.eval.seed), tuple(config.eval.inference_sparsity), config.eval.num_draws,
        stage.runs.widths, int(config.eval.get("energy_draws", 16)),
        None if targets is None else jax.tree.map(jnp.asarray, targets.conditions),
        int(config.eval.get("class_samples", 200)))


def evaluate_stages(config, trained: Trained) -> dict:
    """Every run on the test split (stage by stage), joined in run order: numpy arrays with a leading run axis."""
    per_stage = []
    for stage, params in zip(trained.stages, trained.params):
        compiling = (trained.evaluations or {}).get(stage.index)
        program = compiling.result() if compiling is not None else compile_evaluation(config, trained.data, stage,
                                                                                       params)
        per_stage.append(jax.tree.map(np.asarray, program(params, stage.runs.widths)))
    order = np.argsort(np.concatenate([stage.run_indices for stage in trained.stages]))
    return jax.tree.map(lambda *parts: np.concatenate(parts)[order], *per_stage)


def evaluate_and_report(config, workdir: str, trained: Trained) -> dict:
    """Evaluates every run, writes eval.json, results.json/md and the plots, prints the table."""
    data, stats = trained.data, trained.data.stats
    targets = class_targets(config, data)
    results = evaluate_stages(config, trained)
    levels = tuple(config.eval.inference_sparsity)
    labels = [s.label for s in trained.settings]
    summary = evaluation.summarise(results, labels, levels, stats.keypoint_columns, stats.keypoint_scale, targets)
    evaluation.write_report(summary, workdir)
    report.write_results(summary, config, workdir)
    print(evaluation.mse_table(summary), flush=True)
    return summary


def export(config: ml_collections.ConfigDict, workdir: str, trained: Trained) -> None:
    """The inference bundle: every stage's parameters (stacked over its runs), which runs each stage holds and each
    run's label and widths (``mcjax.generate.mcvae.load_run`` reads it)."""
    runs = []
    for stage in trained.stages:
        widths = None if stage.runs.widths is None else jax.tree.map(np.asarray, stage.runs.widths)
        for position, index in enumerate(stage.run_indices):
            run_widths = None if widths is None else {
                "keypoint_embedding_dim": int(widths.keypoint_embedding[position]),
                "condition_embedding_dim": int(widths.condition_embedding[position]),
                "hidden_dims": [int(h[position]) for h in widths.hidden], "latent_dim": int(widths.latent[position])}
            runs.append({"run": index, "stage": stage.index, "position": position,
                         "label": trained.settings[index].label, "widths": run_widths})
    stages = [{"model": {f: getattr(stage.model, f) for f in (*WIDTH_FIELDS, "prior")}} for stage in trained.stages]
    run_dir.write_bundle(workdir, "mcvae", {"runs": sorted(runs, key=lambda r: r["run"]), "stages": stages},
                         {f"stage_{stage.index}": params for stage, params in zip(trained.stages, trained.params)},
                         config, trained.data.stats.to_json())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The whole mcVAE job of ``train.py``: train (or resume) every run, export the inference bundle, evaluate, write
    the reports; returns eval.json's content."""
    trained = train(config, workdir)
    export(config, workdir, trained)
    return evaluate_and_report(config, workdir, trained)
