"""Evaluation of mcVAE runs on the test split at inference sparsity 0.0, 0.1, ..., 0.9.

Two protocols:
- ``reference`` (the paper's code): one prior draw z, shared by every test row, decoded with each row's conditions
  masked at sparsity s; error = squared error summed over the normalised keypoint dims, averaged over rows.
- ``many_z``: the same error averaged over ``num_draws`` independent draws of z (one per row) and of the masks, so
  the number does not hinge on a single lucky or unlucky z.
Every run of a sweep is evaluated with the same z and masks, so runs compare like for like.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mcjax import conditions as cond_lib
from mcjax.compile import run_once
from mcjax.eval.report import figure, format_table, label_text
from mcjax.io import atomic_write_text
from mcjax.models.mcvae import MCVAE, latent_noise

DEFAULT_LEVELS = tuple(round(0.1 * i, 1) for i in range(10))


def _decode_masked(model: MCVAE, params, z_NxL, conditions, key, s, widths):
    drop = cond_lib.sample_drop_mask(key, s, conditions.batch_size,
                                     conditions.cat_BxK.shape[1] + conditions.num_BxJ.shape[1])
    masked = cond_lib.apply_drop_mask(conditions, drop)
    return model.apply(params, z_NxL, masked, widths, method=MCVAE.decode)


def evaluate_run(model: MCVAE, params, x_NxD, conditions, key, levels, num_draws: int, widths=None) -> dict:
    """Both protocols for one run: ``mse`` [L], ``squared_error_per_dim`` [L, D] (reference) and ``mse_many_z`` [L].
    ``widths`` narrows a width-masked network to the run's own (the same draws of z as the narrow network)."""
    n = x_NxD.shape[0]
    levels = jnp.asarray(levels, jnp.float32)
    level_keys = jax.random.split(jax.random.fold_in(key, 1), levels.shape[0])
    z_shared = jnp.broadcast_to(latent_noise(jax.random.fold_in(key, 0), (), model.latent_dim), (n, model.latent_dim))

    def reference_level(s, level_key):
        x_hat = _decode_masked(model, params, z_shared, conditions, level_key, s, widths)
        return jnp.mean((x_hat - x_NxD) ** 2, axis=0)

    def many_z_level(s, level_key):
        def draw(draw_key):
            z_key, mask_key = jax.random.split(draw_key)
            z = latent_noise(z_key, (n,), model.latent_dim)
            x_hat = _decode_masked(model, params, z, conditions, mask_key, s, widths)
            return jnp.mean(jnp.sum((x_hat - x_NxD) ** 2, axis=-1))

        return jnp.mean(jax.lax.map(draw, jax.random.split(jax.random.fold_in(level_key, 1), num_draws)))

    per_dim = jax.vmap(reference_level)(levels, level_keys)
    return {"mse": jnp.sum(per_dim, axis=-1), "squared_error_per_dim": per_dim,
            "mse_many_z": jax.vmap(many_z_level)(levels, level_keys)}


def evaluate_runs(model: MCVAE, params_R, x_NxD, conditions, key, levels=DEFAULT_LEVELS, num_draws: int = 32,
                  widths_R=None):
    """``evaluate_run`` for every run of a stacked sweep, as one compiled program; numpy results with a leading R."""
    fn = jax.vmap(lambda p, w: evaluate_run(model, p, x_NxD, conditions, key, levels, num_draws, w))
    return jax.tree.map(np.asarray, run_once(fn, params_R, widths_R))


def summarise(results: dict, labels: list[dict], levels, keypoint_columns, keypoint_scale_D) -> dict:
    """The eval.json content: mean over runs per level, per-run rows, and the error in millimetres per column."""
    mse_RxL = results["mse"]
    rmse_mm_LxD = np.sqrt(results["squared_error_per_dim"].mean(axis=0)) * np.asarray(keypoint_scale_D)
    return {
        "inference_sparsity": [float(s) for s in levels],
        "mse": mse_RxL.mean(axis=0).tolist(),
        "mse_std": mse_RxL.std(axis=0).tolist(),
        "mse_mean": float(mse_RxL.mean()),
        "mse_many_z": results["mse_many_z"].mean(axis=0).tolist(),
        "rmse_mm": {c: rmse_mm_LxD[:, d].tolist() for d, c in enumerate(keypoint_columns)},
        "rmse_mm_mean": rmse_mm_LxD.mean(axis=1).tolist(),
        "runs": [{**label, "mse": mse.tolist(), "mse_mean": float(mse.mean()), "mse_many_z": many.tolist()}
                 for label, mse, many in zip(labels, mse_RxL, results["mse_many_z"])],
    }


def mse_table(summary: dict) -> str:
    """Inference sparsity, MSE (mean ± std over runs), many-z MSE and mean RMSE in mm per level, then the means."""
    rows = zip(summary["inference_sparsity"], summary["mse"], summary["mse_std"], summary["mse_many_z"],
               summary["rmse_mm_mean"])
    table = format_table(("s", "MSE (reference)", "± std", "MSE (many z)", "RMSE mm"), rows,
                         ("{:.1f}", "{:.4f}", "{:.4f}", "{:.4f}", "{:.2f}"))
    return table + f"\nmean MSE (reference) {summary['mse_mean']:.4f}, many z {np.mean(summary['mse_many_z']):.4f}"


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
