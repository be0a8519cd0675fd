"""Designs from a trained mcVAE, with any subset of its conditions, loaded from the run directory's bundle alone."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mcjax import run_dir
from mcjax.data.tables import TableStats, csv_text
from mcjax.errors import InputError
from mcjax.generate import plotting
from mcjax.models.mcvae import MCVAE, Widths, latent_noise, mcvae_from_config


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run loaded from its workdir: the model, the training-split statistics and one run's parameters."""

    model: MCVAE
    stats: TableStats
    params: dict
    label: dict
    widths: Widths | None = None  # the run's widths when it was trained inside a wider network


def load_run(workdir: str, run_index: int = 0) -> TrainedRun:
    """Run ``run_index`` of the experiment in ``workdir``, from its inference bundle."""
    bundle = run_dir.read_bundle(workdir, "mcvae")
    runs = bundle.manifest["runs"]
    if not 0 <= run_index < len(runs):
        raise InputError(f"Run index {run_index} is out of range: {workdir} holds {len(runs)} run(s).")
    run = runs[run_index]
    stats = TableStats.from_json(bundle.stats_json)
    model_config = ml_collections.ConfigDict({**bundle.config.model.to_dict(),
                                              **bundle.manifest["stages"][run["stage"]]["model"]})
    model = mcvae_from_config(model_config, stats.conditions, len(stats.keypoint_columns))
    params = jax.tree.map(lambda a: jnp.asarray(a[run["position"]]), bundle.weights(f"stage_{run['stage']}"))
    widths = run["widths"]
    if widths is not None:
        widths = Widths(jnp.int32(widths["keypoint_embedding_dim"]), jnp.int32(widths["condition_embedding_dim"]),
                        tuple(jnp.int32(h) for h in widths["hidden_dims"]), jnp.int32(widths["latent_dim"]))
    return TrainedRun(model, stats, params, run["label"], widths)


def generate(run: TrainedRun, given: dict, num_samples: int, key: jax.Array, temperature: float = 1.0) -> np.ndarray:
    """``num_samples`` designs in the table's own units, [N, D], from draws of the prior given the ``given``
    conditions (a partial dict ``{name: value}``; the rest are missing); ``temperature`` scales the prior's spread
    (1 = the model's, 0 = its mean)."""
    if not temperature >= 0:
        raise InputError(f"The temperature must be >= 0 (1 = the model's spread), got {temperature}.")
    conditions = run.stats.conditions.encode(given, batch_size=num_samples)
    eps = latent_noise(key, (num_samples,), run.model.latent_dim)
    x = run.model.apply(run.params, eps, conditions, run.widths, temperature, method=MCVAE.generate)
    return run.stats.denormalise(np.asarray(x))


def write_samples(run: TrainedRun, designs_NxD: np.ndarray, given: dict, output_dir: str) -> list[str]:
    """``samples.csv`` (keypoint columns plus the conditions used, blank = not given) and ``samples.png``."""
    columns = {c: designs_NxD[:, d].tolist() for d, c in enumerate(run.stats.keypoint_columns)}
    for name in run.stats.conditions.names:
        columns[name] = [given.get(name, "")] * len(designs_NxD)

    def write_csv(path):
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(csv_text(columns))

    rows = plotting.rows_from_array(designs_NxD, run.stats.keypoint_columns)
    titles = [", ".join(f"{k}={v}" for k, v in given.items()) or "no conditions"] * len(rows)
    return plotting.write_samples(output_dir, {"samples.csv": write_csv},
                                  lambda path: plotting.save_grid(rows, run.stats.keypoint_columns, path, titles))
