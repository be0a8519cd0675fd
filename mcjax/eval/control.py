"""Does an image obey its conditions? The condition judge's verdicts and a domain Fréchet distance.

The judge (``mcjax.models.judge``) predicts every condition of an image. Scored against the conditions an image was
*given* — the masked ones and the labels the data lacks do not count — its accuracy on generated images says whether
the generator follows the conditions; on the real test images it gives the ceiling (the judge's own error). The
Fréchet distance between the judge's penultimate features of generated and real images says whether the images look
like the domain's, with no downloaded network.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mcjax import image_metrics
from mcjax.conditions import MISSING_INDEX, Conditions, ConditionSpec
from mcjax.data.batching import fixed_size_batches
from mcjax.data.images import to_signed_unit, to_uint8
from mcjax.models.judge import ConditionJudge

# The Fréchet distance is biased upwards at small N (Chong & Forsyth 2020): sets smaller than this are flagged.
FD_MIN_IMAGES = 500


class Verdicts(NamedTuple):
    """The judge's reading of N images (host arrays)."""

    categories_NxK: np.ndarray  # int32, 1-based like Conditions.cat_BxK
    numbers_NxJ: np.ndarray  # min-max scaled units
    features_NxF: np.ndarray


@functools.lru_cache(maxsize=4)
def _jitted_apply(judge: ConditionJudge):
    """One jitted apply per judge (Linen modules are hashable), so every level and milestone reuses its program."""
    return jax.jit(judge.apply)


def judge_images(judge: ConditionJudge, params, images_NxHxWx3, batch_size: int = 128) -> Verdicts:
    """The judge's verdicts on images (uint8, or float in [0, 1]), in fixed-size batches (one compilation)."""
    apply = _jitted_apply(judge)
    images = to_uint8(images_NxHxWx3)
    parts = []
    for batch, num_real in fixed_size_batches(images, min(batch_size, len(images))):
        out = apply({"params": params}, to_signed_unit(batch))
        categories = jnp.stack([jnp.argmax(logits, axis=-1) + 1 for logits in out.logits], axis=-1) \
            if out.logits else jnp.zeros((len(batch), 0), jnp.int32)
        parts.append(jax.device_get((categories.astype(jnp.int32), out.numbers_BxJ, out.features_BxF)))
        parts[-1] = tuple(a[:num_real] for a in parts[-1])
    return Verdicts(*(np.concatenate(arrays) for arrays in zip(*parts)))


def judge_rows(judge: ConditionJudge, params, images, rows: np.ndarray, batch_size: int = 128) -> Verdicts:
    """``judge_images`` on ``images[rows]`` (an array or ``ImageFiles``), read a batch at a time."""
    chunks = [judge_images(judge, params, images[rows[start:start + batch_size]], batch_size)
              for start in range(0, len(rows), batch_size)]
    return Verdicts(*(np.concatenate(arrays) for arrays in zip(*chunks)))


def condition_scores(verdicts: Verdicts, given: Conditions, spec: ConditionSpec) -> dict:
    """How far the verdicts agree with the ``given`` conditions (host arrays; missing entries are not scored):

    - ``condition_accuracy``: the mean over categorical conditions (those given at least once) of the accuracy on
      the rows that were given it; ``accuracy_per_condition``: each condition's (None where never given);
    - ``numerical_error``: per numerical condition, the mean absolute error in the column's units (None where never
      given).
    """
    cat = np.asarray(given.cat_BxK)
    per_condition = {}
    for k, name in enumerate(spec.categorical_names):
        rows = cat[:, k] != MISSING_INDEX
        per_condition[name] = float(np.mean(verdicts.categories_NxK[rows, k] == cat[rows, k])) if rows.any() else None
    scored = [a for a in per_condition.values() if a is not None]
    num = np.asarray(given.num_BxJ)
    errors = {}
    for j, name in enumerate(spec.numerical_names):
        rows = ~np.isnan(num[:, j])
        span = spec.numerical_max[j] - spec.numerical_min[j]
        errors[name] = float(np.mean(np.abs(verdicts.numbers_NxJ[rows, j] - num[rows, j])) * span) \
            if rows.any() else None
    return {"condition_accuracy": float(np.mean(scored)) if scored else None,
            "accuracy_per_condition": per_condition, "numerical_error": errors}


def frechet_distance(generated: Verdicts, real: Verdicts) -> dict:
    """``fd`` between the feature sets, with ``fd_num_images`` (the smaller set) and ``fd_small_sample`` when that
    is below ``FD_MIN_IMAGES``."""
    num = min(len(generated.features_NxF), len(real.features_NxF))
    return {"fd": image_metrics.frechet_distance(generated.features_NxF, real.features_NxF),
            "fd_num_images": num, "fd_small_sample": num < FD_MIN_IMAGES}


class Judging(NamedTuple):
    """What scoring generated images by a judge needs: the judge, the conditions' spec and its verdicts on the real
    images of the rows being generated (in the same order)."""

    judge: ConditionJudge
    params: dict
    spec: ConditionSpec
    real: Verdicts
    batch_size: int = 128


def _first(verdicts: Verdicts, rows: int) -> Verdicts:
    return Verdicts(*(a[:rows] for a in verdicts))


def level_scores(judging: Judging, images_NxHxWx3, given: Conditions, num_scored: int, with_fd: bool) -> dict:
    """One inference level's control scores: the judge's accuracy and error on the first ``num_scored`` generated
    images against what they were ``given`` (``condition_accuracy``, ``accuracy_per_condition``,
    ``numerical_error``), the same on the real images of those rows (``…_real``: the ceiling), and, when
    ``with_fd``, the Fréchet distance of all generated images to the real images of their rows (else None)."""
    verdicts = judge_images(judging.judge, judging.params, images_NxHxWx3, judging.batch_size)
    scored = Conditions(*(np.asarray(a)[:num_scored] for a in given))
    ours = condition_scores(_first(verdicts, num_scored), scored, judging.spec)
    real = condition_scores(_first(judging.real, num_scored), scored, judging.spec)
    fd = frechet_distance(verdicts, _first(judging.real, len(verdicts.features_NxF))) if with_fd else \
        {"fd": None, "fd_num_images": None, "fd_small_sample": None}
    return {**ours, **{f"{name}_real": value for name, value in real.items()}, **fd}
