"""Scoring refined images: the refined rows of the Table 4 report, and whether refinement keeps the conditions.

``sample.py --workdir W --refine sdxl --refine_model DIR --evaluate``: the run's test rows at one inference level are
generated as the evaluation generates them (same rows, masks and noise), each is refined with a prompt built from the
conditions it was given, and both the raw and the refined images are scored against the rows' own images — MSE,
SSIM, LPIPS and CLIP similarity (when ``eval`` names their weights) and, with the run's condition judge
(``W/judge``), condition accuracy before and after. Writes ``W/eval_refined.json``, ``W/eval_refined.png`` (raw rows
over refined rows) and a section of ``W/results.md``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mcjax import run_dir
from mcjax.data.images import load_images, save_png
from mcjax.eval import ldm as evaluation
from mcjax.eval.perceptual import perceptual_from_config
from mcjax.eval.report import format_table
from mcjax.generate import prompts
from mcjax.generate.ldm import TrainedLDM
from mcjax.generate.refine import RefinePlan, load_refiner, refine_images, resize, side_by_side
from mcjax.io import atomic_write_text
from mcjax.models.judge import load_judge

RESULTS, GRID = "eval_refined.json", "eval_refined.png"
SCORES = ("mse", "ssim", "lpips", "clip_similarity", "condition_accuracy")


def row_prompts(template: str, spec, given) -> list[str]:
    """One prompt per row from the conditions that row was given."""
    return [prompts.build_prompt(template, spec.given_values(given, row), spec.names)
            for row in range(len(np.asarray(given.cat_BxK)))]


def evaluate_refined(workdir: str, run: TrainedLDM, plan: RefinePlan, template: str, level: float = 0.0,
                     num_rows: int = 0) -> dict:
    """Generates, refines and scores the first ``num_rows`` (0: ``eval.num_rows``) test rows at ``level``."""
    config = run_dir.read_bundle(workdir, "ldm").config
    images = load_images(config.data)
    scored, _ = evaluation.evaluation_rows(config, images)
    num_rows = min(num_rows or scored, len(images.table.test_rows))
    config.eval.num_rows = num_rows
    judge_dir = os.path.join(workdir, "judge")
    judging = evaluation.judging_for(load_judge(judge_dir) if os.path.exists(judge_dir) else None, images, num_rows,
                                     int(config.eval.batch_size))
    _, truth, generated = evaluation.evaluate_test_rows(config, run.ldm, images, (level,))
    raw = generated[float(level)]
    given = evaluation.masked_test_conditions(config, images, level, num_rows)
    row_texts = row_prompts(template, run.stats.conditions, given)
    refined = refine_images(load_refiner(plan.kind, plan.folder), raw, row_texts, plan.settings, plan.seed)
    refined = resize(refined, *raw.shape[1:3])  # scored at the mcLDM's size, against the same truth
    truth = np.asarray(truth, np.float32) / 255.0
    perceptual = perceptual_from_config(config.eval)
    batch = int(config.eval.batch_size)
    scores = {name: evaluation.score_images(pictures, truth, given, batch, judging, perceptual)
              for name, pictures in (("raw", raw), ("refined", refined))}
    record = {name: value for name, value in plan.record().items() if name != "prompt"}  # one prompt per row
    summary = {"refiner": record, "template": template, "prompts": row_texts, "inference_sparsity": float(level),
               "num_rows": num_rows, **scores}
    atomic_write_text(os.path.join(workdir, RESULTS), json.dumps(summary, indent=1))
    save_png(side_by_side(raw[:8], refined[:8], columns=8), os.path.join(workdir, GRID))
    _append_to_results(summary, workdir)
    print(refined_table(summary), flush=True)
    return summary


def refined_table(summary: dict) -> str:
    """Raw and refined scores side by side (the metrics that were computed)."""
    names = [n for n in SCORES if n in summary["raw"]]
    rows = [[label] + [f"{summary[key][n]:.4f}" if summary[key][n] is not None else "–" for n in names]
            for key, label in (("raw", "mcLDM"), ("refined", f"refined ({summary['refiner']['refiner']})"))]
    return format_table(["images", *names], rows, ["{}"] * (len(names) + 1))


def _append_to_results(summary: dict, workdir: str) -> None:
    """Adds (or replaces) the refined section of results.md."""
    path = os.path.join(workdir, "results.md")
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    marker = "## Refined images"
    text = text.split(marker)[0].rstrip() + "\n\n" if text else ""
    record = summary["refiner"]
    text += (f"{marker}\n\n{summary['num_rows']} test rows at inference sparsity {summary['inference_sparsity']:.1f}, "
             f"refined by {record['pipeline']} from {record['model']} (strength {record['strength']}, guidance "
             f"{record['guidance_scale']}, {record['num_steps']} steps), prompted with each row's given conditions; "
             f"scored at the mcLDM's size:\n\n```\n{refined_table(summary)}\n```\n")
    atomic_write_text(path, text)
