"""Evaluation of mcVAE runs on the test split at inference sparsity 0.0, 0.1, ..., 0.9.

Two MSE protocols, which reward the conditional mean:
- ``reference`` (the authors' code): one prior draw z, shared by every test row, decoded with each row's conditions
  masked at sparsity s; error = squared error summed over the normalised keypoint dims, averaged over rows.
- ``many_z``: the same error averaged over ``num_draws`` independent draws of z (one per row) and of the masks, so
  the number does not hinge on a single lucky or unlucky z.
And two that see whether the model is a generator:
- ``energy_score``: ES = E‖X − y‖ − ½ E‖X − X′‖ of ``energy_draws`` designs X drawn for each test row given its
  masked conditions, against the row's design y (normalised units, mean over rows). A strictly proper scoring rule
  (Gneiting & Raftery 2007): the true conditional distribution minimises it, so it rewards accuracy and the right
  spread together, where the conditional mean alone scores worse than the truth.
- class fidelity: each value of each categorical condition with at least ``class_min_rows`` training rows, given
  alone; ``class_samples`` designs against the training rows of that value: ``spread_ratio`` (per-column standard
  deviation of the designs over the data's, mean over columns; 1 = as diverse as the data) and
  ``class_mean_error`` (absolute error of the per-column means in the table's units, mean over columns).
Designs are drawn from the model's prior given the conditions (``MCVAE.generate``). Every run of a sweep is evaluated
with the same draws and masks, so runs compare like for like.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax import conditions as cond_lib
from mcjax.compile import compile_once
from mcjax.eval.report import figure, format_table, label_text
from mcjax.io import atomic_write_text
from mcjax.models.mcvae import MCVAE, latent_noise

DEFAULT_LEVELS = tuple(round(0.1 * i, 1) for i in range(10))


def _masked(conditions, key, s):
    """The test rows' conditions at inference sparsity s: each given label dropped with probability s."""
    drop = cond_lib.sample_drop_mask(key, s, conditions.batch_size,
                                     conditions.cat_BxK.shape[1] + conditions.num_BxJ.shape[1])
    return cond_lib.apply_drop_mask(conditions, drop)


def _generate_masked(model: MCVAE, params, eps_NxL, conditions, key, s, widths):
    return model.apply(params, eps_NxL, _masked(conditions, key, s), widths, method=MCVAE.generate)


def energy_score(samples_KxNxD: jax.Array, y_NxD: jax.Array) -> jax.Array:
    """ES = E‖X − y‖ − ½ E‖X − X′‖ per row [N], from K draws (the second term over the K(K − 1) pairs of distinct
    draws, an unbiased estimate)."""
    k = samples_KxNxD.shape[0]
    to_truth = jnp.mean(jnp.linalg.norm(samples_KxNxD - y_NxD, axis=-1), axis=0)
    between_KxKxN = jnp.linalg.norm(samples_KxNxD[:, None] - samples_KxNxD[None], axis=-1)
    return to_truth - 0.5 * jnp.sum(between_KxKxN, axis=(0, 1)) / (k * (k - 1))


def evaluate_run(model: MCVAE, params, x_NxD, conditions, key, levels, num_draws: int, widths=None,
                 energy_draws: int = 16, class_conditions=None, class_samples: int = 200) -> dict:
    """One run: ``mse`` [L], ``squared_error_per_dim`` [L, D] (reference), ``mse_many_z`` [L], ``energy_score`` [L],
    ``conditions_given`` [L] (the mean fraction of conditions given to the model) and, given ``class_conditions``
    (one row per class, see ``class_targets``), the mean and standard deviation of ``class_samples`` designs per
    class, ``class_mean`` and ``class_std`` [C, D]. ``widths`` narrows a width-masked network to the run's own (the
    same draws of z as the narrow network)."""
    n = x_NxD.shape[0]
    levels = jnp.asarray(levels, jnp.float32)
    level_keys = jax.random.split(jax.random.fold_in(key, 1), levels.shape[0])
    eps_shared = jnp.broadcast_to(latent_noise(jax.random.fold_in(key, 0), (), model.latent_dim),
                                  (n, model.latent_dim))

    def reference_level(s, level_key):
        x_hat = _generate_masked(model, params, eps_shared, conditions, level_key, s, widths)
        return jnp.mean((x_hat - x_NxD) ** 2, axis=0)

    def many_z_level(s, level_key):
        def draw(draw_key):
            z_key, mask_key = jax.random.split(draw_key)
            eps = latent_noise(z_key, (n,), model.latent_dim)
            x_hat = _generate_masked(model, params, eps, conditions, mask_key, s, widths)
            return jnp.mean(jnp.sum((x_hat - x_NxD) ** 2, axis=-1))

        return jnp.mean(jax.lax.map(draw, jax.random.split(jax.random.fold_in(level_key, 1), num_draws)))

    def energy_level(s, level_key):
        mask_key, eps_key = jax.random.split(jax.random.fold_in(level_key, 2))
        eps_KxNxL = latent_noise(eps_key, (energy_draws, n), model.latent_dim)
        samples = jax.lax.map(lambda eps: _generate_masked(model, params, eps, conditions, mask_key, s, widths),
                              eps_KxNxL)  # every draw of a row has the same mask: the row's masked conditions
        return jnp.mean(energy_score(samples, x_NxD))

    def given_fraction(s, level_key):  # of the reference protocol's masks; labels the data lacks count as not given
        return jnp.mean(cond_lib.observed(_masked(conditions, level_key, s)))

    per_dim = jax.vmap(reference_level)(levels, level_keys)
    results = {"mse": jnp.sum(per_dim, axis=-1), "squared_error_per_dim": per_dim,
               "conditions_given": jax.vmap(given_fraction)(levels, level_keys),
               "mse_many_z": jax.vmap(many_z_level)(levels, level_keys),
               "energy_score": jax.vmap(energy_level)(levels, level_keys)}
    if class_conditions is not None:
        c = class_conditions.batch_size
        eps_CxNxL = latent_noise(jax.random.fold_in(key, 2), (c, class_samples), model.latent_dim)

        def one_class(condition_row, eps_NxL):
            repeated = jax.tree.map(lambda a: jnp.repeat(a[None], class_samples, axis=0), condition_row)
            return model.apply(params, eps_NxL, repeated, widths, method=MCVAE.generate)

        designs_CxNxD = jax.vmap(one_class)(class_conditions, eps_CxNxL)
        results |= {"class_mean": jnp.mean(designs_CxNxD, axis=1), "class_std": jnp.std(designs_CxNxD, axis=1)}
    return results


def compile_evaluation(model: MCVAE, params_R, x_NxD, conditions, key, levels=DEFAULT_LEVELS, num_draws: int = 32,
                       widths_R=None, energy_draws: int = 16, class_conditions=None, class_samples: int = 200):
    """``evaluate_runs``'s program, compiled for parameters shaped like ``params_R`` (arrays or
    ``jax.ShapeDtypeStruct``s, so it can compile while training runs); call it as ``program(params_R, widths_R)``."""
    fn = jax.vmap(lambda p, w: evaluate_run(model, p, x_NxD, conditions, key, levels, num_draws, w, energy_draws,
                                            class_conditions, class_samples))
    return compile_once(fn, params_R, widths_R)


def evaluate_runs(model: MCVAE, params_R, x_NxD, conditions, key, levels=DEFAULT_LEVELS, num_draws: int = 32,
                  widths_R=None, energy_draws: int = 16, class_conditions=None, class_samples: int = 200):
    """``evaluate_run`` for every run of a stacked sweep, as one compiled program; numpy results with a leading R."""
    program = compile_evaluation(model, params_R, x_NxD, conditions, key, levels, num_draws, widths_R, energy_draws,
                                 class_conditions, class_samples)
    return jax.tree.map(np.asarray, program(params_R, widths_R))


class ClassTargets(NamedTuple):
    """The classes of ``class_targets``: one condition value given alone, and its training rows' statistics."""

    names: list[str]  # "condition=value"
    rows: list[int]  # training rows of the class
    conditions: cond_lib.Conditions  # [C]: the class's condition set, every other condition missing
    mean_CxD: np.ndarray  # the class's training rows, normalised units
    std_CxD: np.ndarray


def class_targets(spec: cond_lib.ConditionSpec, train_x_NxD: np.ndarray, train_conditions: cond_lib.Conditions,
                  min_rows: int = 20) -> ClassTargets | None:
    """Every value of every categorical condition with at least ``min_rows`` training rows (None if there is none)."""
    cat = np.asarray(train_conditions.cat_BxK)
    names, rows, given, means, stds = [], [], [], [], []
    for k, (name, vocabulary) in enumerate(zip(spec.categorical_names, spec.vocabularies)):
        for index, value in enumerate(vocabulary, start=1):
            members = cat[:, k] == index
            if members.sum() >= min_rows:
                names.append(f"{name}={value}")
                rows.append(int(members.sum()))
                row = np.full(len(spec.categorical_names), cond_lib.MISSING_INDEX, np.int32)
                row[k] = index
                given.append(row)
                means.append(train_x_NxD[members].mean(axis=0))
                stds.append(train_x_NxD[members].std(axis=0))
    if not names:
        return None
    conditions = cond_lib.Conditions(np.stack(given), np.full((len(names), len(spec.numerical_names)), np.nan,
                                                             np.float32))
    return ClassTargets(names, rows, conditions, np.stack(means), np.stack(stds))


def class_scores(results: dict, targets: ClassTargets, keypoint_scale_D) -> tuple[np.ndarray, np.ndarray]:
    """(spread ratio, class-mean error in the table's units), each [R, C]: per-column ratios of standard deviations
    (columns the class holds constant left out) and absolute mean errors, averaged over columns."""
    varies = targets.std_CxD > 0
    ratio = np.where(varies, results["class_std"] / np.where(varies, targets.std_CxD, 1.0), np.nan)
    spread_RxC = np.nanmean(ratio, axis=-1)
    error_RxC = np.mean(np.abs(results["class_mean"] - targets.mean_CxD) * np.asarray(keypoint_scale_D), axis=-1)
    return spread_RxC, error_RxC


def summarise(results: dict, labels: list[dict], levels, keypoint_columns, keypoint_scale_D,
              targets: ClassTargets | None = None) -> dict:
    """The eval.json content: mean over runs per level, per-run rows, the error in millimetres per column and, with
    ``targets``, class fidelity per class (mean over runs) and overall."""
    mse_RxL, energy_RxL = results["mse"], results["energy_score"]
    rmse_mm_LxD = np.sqrt(results["squared_error_per_dim"].mean(axis=0)) * np.asarray(keypoint_scale_D)
    summary = {
        "inference_sparsity": [float(s) for s in levels],
        "mse": mse_RxL.mean(axis=0).tolist(),
        "mse_std": mse_RxL.std(axis=0).tolist(),
        "mse_mean": float(mse_RxL.mean()),
        "conditions_given": results["conditions_given"].mean(axis=0).tolist(),
        "mse_many_z": results["mse_many_z"].mean(axis=0).tolist(),
        "energy_score": energy_RxL.mean(axis=0).tolist(),
        "energy_score_std": energy_RxL.std(axis=0).tolist(),
        "rmse_mm": {c: rmse_mm_LxD[:, d].tolist() for d, c in enumerate(keypoint_columns)},
        "rmse_mm_mean": rmse_mm_LxD.mean(axis=1).tolist(),
    }
    runs = [{**label, "mse": mse.tolist(), "mse_mean": float(mse.mean()), "mse_many_z": many.tolist(),
             "energy_score": energy.tolist()}
            for label, mse, many, energy in zip(labels, mse_RxL, results["mse_many_z"], energy_RxL)]
    if targets is not None:
        spread_RxC, error_RxC = class_scores(results, targets, keypoint_scale_D)
        summary |= {"spread_ratio": float(spread_RxC.mean()), "class_mean_error": float(error_RxC.mean()),
                    "classes": {name: {"training_rows": rows, "spread_ratio": float(spread_RxC[:, c].mean()),
                                       "class_mean_error": float(error_RxC[:, c].mean())}
                                for c, (name, rows) in enumerate(zip(targets.names, targets.rows))}}
        for run, spread, error in zip(runs, spread_RxC, error_RxC):
            run |= {"spread_ratio": float(spread.mean()), "class_mean_error": float(error.mean())}
    return summary | {"runs": runs}


def mse_table(summary: dict) -> str:
    """Per inference sparsity: the fraction of conditions given, MSE (mean ± std over runs), many-z MSE, energy score
    and mean RMSE in mm; then the means and the class fidelity."""
    rows = zip(summary["inference_sparsity"], summary["conditions_given"], summary["mse"], summary["mse_std"],
               summary["mse_many_z"], summary["energy_score"], summary["rmse_mm_mean"])
    table = format_table(("s", "given", "MSE (reference)", "± std", "MSE (many z)", "energy score", "RMSE mm"), rows,
                         ("{:.1f}", "{:.2f}", "{:.4f}", "{:.4f}", "{:.4f}", "{:.4f}", "{:.2f}"))
    table += (f"\nmean MSE (reference) {summary['mse_mean']:.4f}, many z {np.mean(summary['mse_many_z']):.4f}, "
              f"energy score {np.mean(summary['energy_score']):.4f}")
    if "spread_ratio" in summary:
        table += (f"\none condition given alone ({len(summary['classes'])} classes): spread ratio "
                  f"{summary['spread_ratio']:.2f} (1 = as diverse as the data), class-mean error "
                  f"{summary['class_mean_error']:.2f} (table units)")
    return table


def write_report(summary: dict, workdir: str) -> None:
    """``eval.json`` (written atomically) and ``mse_vs_sparsity.png`` (one line per run)."""
    atomic_write_text(os.path.join(workdir, "eval.json"), json.dumps(summary, indent=1))
    plot_mse(summary, os.path.join(workdir, "mse_vs_sparsity.png"))


def plot_mse(summary: dict, path: str) -> None:
    fig = figure(6, 4)
    ax = fig.subplots()
    levels = summary["inference_sparsity"]
    runs = summary["runs"]
    for run in runs:
        label = label_text({k: v for k, v in run.items() if not k.startswith("mse")}) if len(runs) <= 10 else None
        ax.plot(levels, run["mse"], alpha=0.35 if len(runs) > 1 else 1.0, lw=1, label=label)
    if len(runs) > 1:
        ax.plot(levels, summary["mse"], color="black", lw=2, label="mean over runs")
    ax.set_xlabel("inference sparsity")
    ax.set_ylabel("MSE (normalised keypoints)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
