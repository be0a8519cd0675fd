"""The paper's Table 4 perceptual scores of generated against ground-truth images: LPIPS and CLIP image–image
cosine similarity, from weight files the user has (``mcjax.models.lpips``, ``mcjax.models.clip``).

Config fields name the files (``eval.lpips_backbone``, ``eval.lpips_lin``, ``eval.lpips_net``, ``eval.clip_weights``);
a metric whose weights are not named is left out of ``eval.json``, never written as 0 or NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Perceptual(NamedTuple):
    """Loaded perceptual networks: (module, variables) each, or None when its weights were not given."""

    lpips: tuple | None
    clip: tuple | None


def perceptual_from_config(eval_config) -> Perceptual | None:
    """The networks ``eval_config`` names (None when it names neither)."""
    backbone, clip_path = eval_config.get("lpips_backbone", ""), eval_config.get("clip_weights", "")
    lpips = clip = None
    if backbone:
        from mcjax.models.lpips import load_lpips

        lpips = load_lpips(eval_config.get("lpips_net", "alex"), backbone, eval_config.get("lpips_lin", "") or None)
    if clip_path:
        from mcjax.models.clip import load_clip

        module, variables, _ = load_clip(clip_path)
        clip = (module, variables)
    return Perceptual(lpips, clip) if lpips or clip else None


def perceptual_scores(perceptual: Perceptual, generated_NxHxWx3, truth_NxHxWx3, batch_size: int) -> dict:
    """Mean ``lpips`` and ``clip_similarity`` of generated vs ground-truth images (floats in [0, 1]), for the networks
    that were loaded, in batches of ``batch_size``."""
    from mcjax.models.clip import clip_image_similarity
    from mcjax.models.lpips import lpips_distance

    scorers = {"lpips": (lpips_distance, perceptual.lpips), "clip_similarity": (clip_image_similarity, perceptual.clip)}
    scores = {}
    for name, (score, loaded) in scorers.items():
        if loaded is None:
            continue
        values = [np.asarray(score(*loaded, generated_NxHxWx3[i:i + batch_size], truth_NxHxWx3[i:i + batch_size]))
                  for i in range(0, len(generated_NxHxWx3), batch_size)]
        scores[name] = float(np.mean(np.concatenate(values)))
    return scores
