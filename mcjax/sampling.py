"""Generating designs from a trained mcVAE run with any subset of its conditions."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mcjax import plotting
from mcjax.data.tables import TableStats, csv_text
from mcjax.models.vae import MCVAE, Widths, latent_noise, model_from_config
from mcjax.train import checkpoints
from mcjax.train import vae as vae_train
from mcjax.train.experiment import stage_checkpoints
from mcjax.train.runs import expand_runs, stack_runs


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run loaded from its workdir: the model, the training-split statistics and one run's parameters."""

    model: MCVAE
    stats: TableStats
    params: dict
    label: dict
    widths: Widths | None = None  # the run's widths when it was trained inside a wider network


def read_workdir_file(workdir: str, name: str) -> str:
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} the --workdir of a finished train.py run?")
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_run(workdir: str, run_index: int = 0) -> TrainedRun:
    """Loads run ``run_index`` of the experiment in ``workdir`` from its stage's newest checkpoint."""
    config = ml_collections.ConfigDict(json.loads(read_workdir_file(workdir, "config.json")))
    stats = TableStats.from_json(read_workdir_file(workdir, "stats.json"))
    settings = expand_runs(config)
    if not 0 <= run_index < len(settings):
        raise ValueError(f"--run_index {run_index} is out of range: {workdir} holds {len(settings)} run(s).")
    stage_index, stage = next((k, s) for k, s in enumerate(json.loads(read_workdir_file(workdir, "stages.json")))
                              if run_index in s["runs"])
    model_config = ml_collections.ConfigDict({**config.model.to_dict(), **stage["model"]})
    model = model_from_config(model_config, stats.conditions, len(stats.keypoint_columns))
    members = [settings[i] for i in stage["runs"]]
    # The state's structure does not depend on the training rows; enough rows for every subset stand in for them.
    runs = stack_runs(members, max([m.train_size for m in members] + [config.train.batch_size]), config.model)
    trainer = vae_train.make_trainer(model, config, runs)
    sample_data = vae_train.TrainData(jnp.zeros((1, len(stats.keypoint_columns))),
                                      jax.tree.map(jnp.asarray, stats.conditions.encode({})))
    abstract = jax.eval_shape(jax.vmap(lambda r: vae_train.init_state(trainer, r, sample_data)), runs)
    manager = stage_checkpoints(workdir, stage_index)
    state = checkpoints.restore_latest(manager, abstract)
    manager.close()
    if state is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints: train the run first.")
    position = stage["runs"].index(run_index)
    pick = functools.partial(jax.tree.map, lambda a: a[position])
    widths = None if runs.widths is None else pick(runs.widths)
    return TrainedRun(model, stats, pick(state.params), settings[run_index].label, widths)


def generate(run: TrainedRun, given: dict, num_samples: int, key: jax.Array) -> np.ndarray:
    """``num_samples`` designs in the table's own units, [N, D], from prior draws of z and the ``given`` conditions
    (a partial dict ``{name: value}``; the rest are missing)."""
    conditions = run.stats.conditions.encode(given, batch_size=num_samples)
    z = latent_noise(key, (num_samples,), run.model.latent_dim)
    x = run.model.apply(run.params, z, conditions, run.widths, method=MCVAE.decode)
    return run.stats.denormalise(np.asarray(x))


def write_samples(run: TrainedRun, designs_NxD: np.ndarray, given: dict, output_dir: str) -> list[str]:
    """``samples.csv`` (keypoint columns plus the conditions used, blank = not given) and ``samples.png``."""
    os.makedirs(output_dir, exist_ok=True)
    columns = {c: designs_NxD[:, d].tolist() for d, c in enumerate(run.stats.keypoint_columns)}
    for name in run.stats.conditions.names:
        columns[name] = [given.get(name, "")] * len(designs_NxD)
    csv_path = os.path.join(output_dir, "samples.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        f.write(csv_text(columns))
    png_path = os.path.join(output_dir, "samples.png")
    rows = plotting.rows_from_array(designs_NxD, run.stats.keypoint_columns)
    plotting.save_grid(rows, run.stats.keypoint_columns, png_path,
                       titles=[", ".join(f"{k}={v}" for k, v in given.items()) or "no conditions"] * len(rows))
    return [csv_path, png_path]


def parse_conditions(pairs, names) -> dict:
    """``["BikeStyle=BMX", "Teeth on chainring=44"]`` → dict; clear errors for malformed or unknown names."""
    given = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--condition {pair!r}: expected NAME=VALUE.")
        name, value = (part.strip() for part in pair.split("=", 1))
        if name not in names:
            raise ValueError(f"Unknown condition {name!r}; valid conditions: {list(names)}.")
        given[name] = value
    return given
