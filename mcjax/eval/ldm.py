"""Scoring mcLDM images: the paper's level-wise protocol, a retrieval baseline, a curve over training, reconstructions.

Images are scored against the test row's own image by MSE, SSIM and PSNR (``mcjax.image_metrics``). A level's
condition masks are drawn from the level's value and a row's starting noise from its batch, so a level scores the same
whichever other levels come with it, and every level starts from the same x_T.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mcjax import conditions as cond_lib
from mcjax import image_metrics
from mcjax.conditions import Conditions
from mcjax.data.batching import fixed_size_batches
from mcjax.data.images import ImageData, image_grid, save_png, to_signed_unit, to_uint8
from mcjax.eval import control
from mcjax.eval.ldm_report import plot_control, score_table, sweep_table, write_results
from mcjax.eval.perceptual import Perceptual, perceptual_from_config, perceptual_scores
from mcjax.io import atomic_write_text
from mcjax.models.ldm import LDM, SamplerSettings, generate_for_rows

SCORES = ("mse", "ssim", "psnr")


def image_scores(generated_NxHxWx3: np.ndarray, truth_NxHxWx3: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image MSE, SSIM and PSNR of generated images against the ground truth (both in [0, 1])."""
    a, b = jnp.asarray(generated_NxHxWx3, jnp.float32), jnp.asarray(truth_NxHxWx3, jnp.float32)
    return {"mse": np.asarray(image_metrics.mse(a, b)), "ssim": np.asarray(image_metrics.ssim(a, b)),
            "psnr": np.asarray(image_metrics.psnr(a, b))}


def _level_key(key: jax.Array, level: float) -> jax.Array:
    """The key of inference sparsity ``level``, from the level's value (to 1e-6) rather than its position."""
    return jax.random.fold_in(key, round(float(level) * 1_000_000))


def level_masks(key: jax.Array, level: float, conditions: Conditions) -> Conditions:
    """``conditions`` with each condition of each row masked with probability ``level``; row i's draws come from
    ``fold_in(level key, i)``, so a row is masked alike however many rows are evaluated."""
    conditions = jax.tree.map(jnp.asarray, conditions)
    num_conditions = conditions.cat_BxK.shape[1] + conditions.num_BxJ.shape[1]
    level_key = _level_key(key, level)
    u_BxM = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(level_key, i), (num_conditions,)))(
        jnp.arange(conditions.batch_size))
    drop = cond_lib.drop_mask_from_uniform(u_BxM, jnp.float32(level))
    return jax.tree.map(np.asarray, cond_lib.apply_drop_mask(conditions, drop))


def evaluation_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mask key, noise key) of an evaluation seeded with ``key``."""
    mask_key, noise_key = jax.random.split(key)
    return mask_key, noise_key


def masked_test_conditions(config, images: ImageData, level: float, num_rows: int) -> Conditions:
    """The first ``num_rows`` test rows' conditions as the evaluation masks them at ``level`` (host arrays)."""
    mask_key, _ = evaluation_keys(jax.random.key(int(config.eval.seed)))
    return level_masks(mask_key, level, conditions_on_host(images.table.test_conditions, np.arange(num_rows)))


def evaluate(ldm: LDM, truth_NxHxWx3: np.ndarray, conditions: Conditions, levels, key: jax.Array,
             settings: SamplerSettings, batch_size: int, num_scored: int | None = None,
             judging: control.Judging | None = None, fd_levels=(),
             perceptual: Perceptual | None = None) -> tuple[dict, dict[float, np.ndarray]]:
    """The paper's Figure 2 / Table 4 protocol: each row's conditions masked at each inference sparsity level
    (per condition, independently), one image generated per row and level, scored against the row's image.

    The first ``num_scored`` rows (all by default) are generated and scored at every level; at ``fd_levels`` every
    row is generated, for the Fréchet distance. Returns (summary with per-level lists ``mse``, ``ssim``, ``psnr``
    and their standard deviations over rows, ``conditions_given`` — the mean fraction of conditions given (labels the
    data lacks are never given) — and, with a judge, ``control.level_scores``' entries, with ``perceptual`` networks
    ``lpips`` and ``clip_similarity``; {level: generated images of the scored rows})."""
    mask_key, noise_key = evaluation_keys(key)
    num_scored = len(truth_NxHxWx3) if num_scored is None else num_scored
    truth = np.asarray(truth_NxHxWx3[:num_scored], np.float32) / (255.0 if truth_NxHxWx3.dtype == np.uint8 else 1.0)
    summary = {"inference_sparsity": [float(s) for s in levels], "num_rows": num_scored, "conditions_given": []}
    generated = {}
    for level in levels:
        rows = len(conditions.cat_BxK) if float(level) in fd_levels else num_scored
        masked = level_masks(mask_key, level, conditions_on_host(conditions, slice(rows)))
        images = generate_for_rows(ldm, masked, noise_key, settings, batch_size)
        generated[float(level)] = images[:num_scored]
        summary["conditions_given"].append(float(np.mean(cond_lib.observed(masked)[:num_scored])))
        for name, value in score_images(images, truth, masked, batch_size, judging, perceptual,
                                        float(level) in fd_levels).items():
            summary.setdefault(name, []).append(value)
    return summary, generated


def score_images(images_NxHxWx3, truth_MxHxWx3, given: Conditions, batch_size: int,
                 judging: control.Judging | None = None, perceptual: Perceptual | None = None,
                 with_fd: bool = False) -> dict:
    """Every score of one set of generated images whose first M rows are scored against ``truth`` (in [0, 1]): mean
    and standard deviation of MSE, SSIM and PSNR, with ``perceptual`` networks LPIPS and CLIP similarity, with a
    judge ``control.level_scores``' entries (the FD over all rows when ``with_fd``)."""
    num_scored = len(truth_MxHxWx3)
    scores = {}
    for name, values in image_scores(images_NxHxWx3[:num_scored], truth_MxHxWx3).items():
        scores[name], scores[f"{name}_std"] = float(np.mean(values)), float(np.std(values))
    if perceptual is not None:
        scores.update(perceptual_scores(perceptual, images_NxHxWx3[:num_scored], truth_MxHxWx3, batch_size))
    if judging is not None:
        scores.update(control.level_scores(judging, images_NxHxWx3, given, num_scored, with_fd))
    return scores


def conditions_on_host(conditions: Conditions, rows=slice(None)) -> Conditions:
    """The ``rows`` (an index array or a slice; all by default) of ``conditions``, as host arrays."""
    return Conditions(*(np.asarray(a)[rows] for a in conditions))


def condition_agreement(train: Conditions, test: Conditions) -> np.ndarray:
    """[test rows, training rows]: on how many conditions each pair agrees (host arrays; a missing numerical value
    agrees with a missing one)."""
    same_cat = test.cat_BxK[:, None, :] == train.cat_BxK[None, :, :]
    a, b = test.num_BxJ[:, None, :], train.num_BxJ[None, :, :]
    same_num = (a == b) | (np.isnan(a) & np.isnan(b))
    return same_cat.sum(-1) + same_num.sum(-1)


def most_similar_training_rows(train: Conditions, test: Conditions) -> tuple[np.ndarray, np.ndarray]:
    """For each test row, the first training row that agrees on the most conditions, and how many it agrees on."""
    agree = condition_agreement(train, test)
    best = np.argmax(agree, axis=1)
    return best, agree[np.arange(len(best)), best]


def retrieval_baseline(images: ImageData, rows: np.ndarray) -> dict:
    """Scores of a generator-free answer: the training image whose conditions agree most with the test row's.

    Bikes with identical conditions still differ in geometry (the keypoints are not conditions), so this bounds what
    image metrics can reward at inference sparsity 0: a faithful conditional sampler scores about as well.
    """
    data = images.table
    test = conditions_on_host(data.test_conditions, rows)
    best, agree = most_similar_training_rows(conditions_on_host(data.train_conditions), test)
    truth = np.asarray(images.images_NxHxWx3[data.test_rows[rows]]) / 255.0
    retrieved = np.asarray(images.images_NxHxWx3[data.train_rows[best]]) / 255.0
    summary = {name: float(np.mean(values)) for name, values in image_scores(retrieved, truth).items()}
    summary["rows_with_identical_conditions"] = int(np.sum(agree == test.cat_BxK.shape[1] + test.num_BxJ.shape[1]))
    return summary


def judging_for(judge_and_params, images: ImageData, num_rows: int, batch_size: int) -> control.Judging | None:
    """The judge (``mcjax.train.judge.condition_judge``'s result, or None) with its verdicts on the real images of
    the first ``num_rows`` test rows."""
    if judge_and_params is None:
        return None
    judge, params = judge_and_params
    data = images.table
    real = control.judge_rows(judge, params, images.images_NxHxWx3, data.test_rows[:num_rows], batch_size)
    return control.Judging(judge, params, data.stats.conditions, real, batch_size)


def evaluation_rows(config, images: ImageData) -> tuple[int, int]:
    """(rows scored at every level, rows generated at the FD levels), bounded by the test split."""
    available = len(images.table.test_rows)
    scored = min(int(config.eval.num_rows) or available, available)
    return scored, max(scored, min(int(config.eval.get("fd_num_rows", 0)), available))


def evaluate_test_rows(config, ldm: LDM, images: ImageData, levels, judging: control.Judging | None = None,
                       fd_levels=(), perceptual: Perceptual | None = None) -> tuple[dict, np.ndarray, dict]:
    """``evaluate`` on the first test rows (``evaluation_rows``): (summary, the scored rows' images, generated)."""
    test = images.table
    scored, total = evaluation_rows(config, images)
    fd_levels = {float(s) for s in fd_levels} if judging is not None else set()
    total = total if fd_levels & {float(s) for s in levels} else scored
    conditions = conditions_on_host(test.test_conditions, np.arange(total))
    truth = np.asarray(images.images_NxHxWx3[test.test_rows[:scored]])
    summary, generated = evaluate(ldm, truth, conditions, tuple(levels), jax.random.key(int(config.eval.seed)),
                                  SamplerSettings.from_config(config.eval), int(config.eval.batch_size), scored,
                                  judging, fd_levels, perceptual)
    return summary, truth, generated


class TrainingCurve:
    """``W/eval_curve.jsonl``: the EMA weights scored at ``eval.curve_sparsity`` on the evaluation's test rows every
    ``eval.every_steps`` steps, one line ``{"step", "inference_sparsity", "mse", "ssim", "psnr"}`` per milestone
    (with a judge also ``condition_accuracy`` and ``accuracy_per_condition``, so runs that differ in one condition's
    labels can be compared on that condition at equal steps).

    The last step's point is read from the final evaluation when that scores the curve's levels anyway (same
    weights, rows, masks and noise), rather than generating those images twice."""

    def __init__(self, config, workdir: str, make_ldm: Callable[[object], LDM], images: ImageData,
                 judging: control.Judging | None = None):
        self.config, self.make_ldm, self.images, self.judging = config, make_ldm, images, judging
        self.levels = tuple(float(s) for s in config.eval.get("curve_sparsity", (0.0,)))
        self.path = os.path.join(workdir, "eval_curve.jsonl")
        self.final_step = int(config.train.steps)
        self.final_from_evaluation = set(self.levels) <= {float(s) for s in config.eval.inference_sparsity}
        self.final_pending = False  # the last milestone was reached in this call, its point not yet written

    def at_milestone(self, step: int, state) -> None:
        """``on_milestone`` for ``mcjax.train.ldm.train_unet``."""
        if jax.process_index() != 0:
            return
        if step == self.final_step and self.final_from_evaluation:
            self.final_pending = True
            return
        summary, _, _ = evaluate_test_rows(self.config, self.make_ldm(state), self.images, self.levels, self.judging)
        self._append(step, summary)

    def after_evaluation(self, summary: dict) -> None:
        """Writes the last step's point from the final evaluation's ``summary`` when it was left for it."""
        if self.final_pending:
            self._append(self.final_step, summary)
            self.final_pending = False

    def _append(self, step: int, summary: dict) -> None:
        index = [summary["inference_sparsity"].index(level) for level in self.levels]
        names = SCORES + (("condition_accuracy", "accuracy_per_condition") if "condition_accuracy" in summary else ())
        line = {"step": step, "inference_sparsity": list(self.levels),
                **{name: [summary[name][i] for i in index] for name in names}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        scores = ", ".join(f"s={s:g}: SSIM {q:.4f}" + (f", condition accuracy {line['condition_accuracy'][i]:.3f}"
                                                         if "condition_accuracy" in line else "")
                           for i, (s, q) in enumerate(zip(self.levels, line["ssim"])))
        print(f"mcjax: step {step}: {scores}", flush=True)


def write_eval(summary: dict, truth_NxHxWx3: np.ndarray, generated: dict[float, np.ndarray], workdir: str,
               grid_rows: int) -> list[str]:
    """``eval.json`` and ``eval.png`` (a row per test image: ground truth, then one image per sparsity level)."""
    json_path = os.path.join(workdir, "eval.json")
    atomic_write_text(json_path, json.dumps(summary, indent=1))
    shown = min(grid_rows, len(truth_NxHxWx3))
    columns = [to_uint8(truth_NxHxWx3[:shown])] + [to_uint8(generated[s][:shown]) for s in sorted(generated)]
    png_path = save_png(image_grid(np.stack(columns, axis=1)), os.path.join(workdir, "eval.png"))
    return [json_path, png_path]


def fd_reference(judging: control.Judging, images: ImageData, num_images: int) -> dict:
    """The FD of as many real *training* images to the real test images: what a generator as good as the data
    itself scores at this N (the FD's floor, which is not 0 at finite N)."""
    data = images.table
    train = control.judge_rows(judging.judge, judging.params, images.images_NxHxWx3, data.train_rows[:num_images],
                               judging.batch_size)
    real = control.Verdicts(*(a[:num_images] for a in judging.real))
    return control.frechet_distance(train, real)


SWEEP_SCORES = ("condition_accuracy", "condition_accuracy_real", "fd", "fd_num_images", "ssim", "mse")


def guidance_sweep(config, ldm: LDM, images: ImageData, judging: control.Judging | None, scales) -> list[dict]:
    """What the guidance scale is for: condition accuracy, FD and SSIM per scale at ``eval.guidance_sweep_sparsity``
    (each on ``eval.fd_num_rows`` rows), same rows, masks and noise as the evaluation. One row per scale and level."""
    levels = tuple(float(s) for s in config.eval.get("guidance_sweep_sparsity", (0.0,)))
    rows = []
    for scale in scales:
        scaled = config.copy_and_resolve_references()
        scaled.eval.guidance_scale = float(scale)
        summary, _, _ = evaluate_test_rows(scaled, ldm, images, levels, judging, levels)
        rows += [{"guidance_scale": float(scale), "inference_sparsity": level,
                  **{name: summary[name][i] for name in SWEEP_SCORES if name in summary}}
                 for i, level in enumerate(levels)]
    return rows


def evaluate_and_write(config, workdir: str, ldm: LDM, images: ImageData,
                       judging: control.Judging | None = None) -> dict:
    """Generates test images at every inference sparsity level, writes eval.json, eval.png and results.md (and,
    with a judge, eval_control.png), prints the table."""
    started = time.perf_counter()
    fd_levels = tuple(config.eval.get("fd_sparsity", ()))
    summary, truth, generated = evaluate_test_rows(config, ldm, images, config.eval.inference_sparsity, judging,
                                                   fd_levels, perceptual_from_config(config.eval))
    summary["sampler"] = dict(config.eval.to_dict(), num_rows=len(truth))
    summary["eval_seconds"] = round(time.perf_counter() - started, 1)
    summary["retrieval_baseline"] = retrieval_baseline(images, np.arange(len(truth)))
    if judging is not None and any(v is not None for v in summary["fd"]):
        summary["fd_reference"] = fd_reference(judging, images, next(n for n in summary["fd_num_images"] if n))
    if config.eval.get("guidance_sweep", ()):
        summary["guidance_sweep"] = guidance_sweep(config, ldm, images, judging, config.eval.guidance_sweep)
    write_eval(summary, truth, generated, workdir, int(config.eval.grid_rows))
    write_results(summary, config, workdir)
    print(score_table(summary), flush=True)
    if "guidance_sweep" in summary:
        print(sweep_table(summary["guidance_sweep"]), flush=True)
    baseline = summary["retrieval_baseline"]
    print(f"retrieval baseline (the training image with the most agreeing conditions): MSE {baseline['mse']:.5f}, "
          f"SSIM {baseline['ssim']:.4f}, PSNR {baseline['psnr']:.2f} dB", flush=True)
    if judging is not None:
        plot_control(summary, os.path.join(workdir, "eval_control.png"))
        if "fd_reference" in summary:
            ref = summary["fd_reference"]
            print(f"FD of {ref['fd_num_images']} real training images to the test images (the floor): "
                  f"{ref['fd']:.2f}", flush=True)
    return summary


def score_reconstructions(config, workdir: str, module, variables, images: ImageData) -> dict:
    """The first stage's reconstructions of the first ``eval.num_rows`` test images: eval.json (mse, ssim, psnr)
    and eval.png (originals beside reconstructions)."""
    data = images.table
    rows = data.test_rows[: int(config.eval.num_rows) or len(data.test_rows)]
    truth = np.asarray(images.images_NxHxWx3[rows])
    reconstruct = jax.jit(lambda v, x: jnp.clip((module.apply(v, x)[0] + 1.0) / 2.0, 0.0, 1.0))
    batches = fixed_size_batches(truth, min(int(config.eval.batch_size), len(truth)))
    reconstructed = np.concatenate([np.asarray(reconstruct(variables, to_signed_unit(batch)))[:num_real]
                                    for batch, num_real in batches])
    summary = {name: float(np.mean(values)) for name, values in image_scores(reconstructed, truth / 255.0).items()}
    summary.update(num_rows=len(rows), latent_scale=float(module.config.scaling_factor))
    write_eval(summary, truth, {0.0: reconstructed}, workdir, 8)
    print(f"autoencoder reconstructions of {len(rows)} test images: MSE {summary['mse']:.5f}, "
          f"SSIM {summary['ssim']:.4f}, PSNR {summary['psnr']:.2f} dB", flush=True)
    return summary
