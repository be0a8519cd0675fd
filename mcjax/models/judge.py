"""The condition judge: a small image classifier/regressor with one head per condition.

It answers what image metrics against the test row's own picture cannot: is the requested rim style, bike style or
bottle *in* a generated image? Trained on the real training images (``mcjax.train.judge``), it predicts every
condition from an image; its penultimate features give a domain Fréchet distance that needs no downloaded network.
Convolutions halve the map down to 4 × 4 and the map is flattened, not averaged, so the heads know *where* a part
is (the front rim is not the rear one).
"""

from __future__ import annotations

import json
import math
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np

from mcjax.errors import InputError
from mcjax.models.layers import conv

WEIGHTS, ARCHITECTURE = "judge.safetensors", "judge.json"


class JudgeOutput(NamedTuple):
    logits: tuple[jax.Array, ...]  # one [B, n_k] per categorical condition (index 0 = the first category)
    numbers_BxJ: jax.Array  # numerical conditions in their min-max scaled units
    features_BxF: jax.Array  # the penultimate layer: what the Fréchet distance compares


class ConditionJudge(nn.Module):
    num_categories: tuple[int, ...]
    num_numerical: int
    image_size: int
    base_channels: int = 32
    max_channels: int = 128
    feature_dim: int = 256

    @property
    def num_levels(self) -> int:
        """Stride-2 stages from ``image_size`` down to a 4 × 4 map."""
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise InputError(f"The condition judge needs a power-of-two image size of at least 8, got "
                             f"{self.image_size}.")
        return int(math.log2(self.image_size)) - 2

    @nn.compact
    def __call__(self, images_BxHxWx3: jax.Array) -> JudgeOutput:
        """Images in [-1, 1] → per-condition predictions and features."""
        h = images_BxHxWx3
        for level in range(self.num_levels):
            channels = min(self.base_channels * 2**level, self.max_channels)
            h = nn.silu(nn.GroupNorm(num_groups=math.gcd(8, channels))(conv(channels, (3, 3), strides=(2, 2))(h)))
            h = nn.silu(nn.GroupNorm(num_groups=math.gcd(8, channels))(conv(channels, (3, 3))(h)))
        features = nn.silu(nn.Dense(self.feature_dim)(h.reshape(h.shape[0], -1)))
        logits = tuple(nn.Dense(n, name=f"category_{k}")(features) for k, n in enumerate(self.num_categories))
        numbers = nn.Dense(self.num_numerical, name="numbers")(features)
        return JudgeOutput(logits, numbers, features)


def judge_architecture(judge: ConditionJudge) -> dict:
    return {"num_categories": list(judge.num_categories), "num_numerical": judge.num_numerical,
            "image_size": judge.image_size, "base_channels": judge.base_channels,
            "max_channels": judge.max_channels, "feature_dim": judge.feature_dim}


def judge_from_config(judge_config, num_categories: tuple[int, ...], num_numerical: int,
                      image_size: int) -> ConditionJudge:
    return ConditionJudge(tuple(int(n) for n in num_categories), int(num_numerical), int(image_size),
                          int(judge_config.base_channels), int(judge_config.max_channels),
                          int(judge_config.feature_dim))


def save_judge(judge: ConditionJudge, params, directory: str) -> None:
    """``directory/judge.safetensors`` and ``judge.json`` (the architecture); the caller renames the folder into
    place, so a judge is only ever read complete."""
    from flax import traverse_util
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, os.path.join(directory, WEIGHTS))
    with open(os.path.join(directory, ARCHITECTURE), "w", encoding="utf-8") as f:
        json.dump(judge_architecture(judge), f, indent=1)


def load_judge(directory: str) -> tuple[ConditionJudge, dict]:
    """(module, params) saved by ``save_judge``."""
    from flax import traverse_util
    from safetensors.numpy import load_file

    weights, architecture = os.path.join(directory, WEIGHTS), os.path.join(directory, ARCHITECTURE)
    if not (os.path.exists(weights) and os.path.exists(architecture)):
        raise FileNotFoundError(f"No condition judge in {directory} (expected {WEIGHTS} and {ARCHITECTURE}).")
    with open(architecture, encoding="utf-8") as f:
        arch = json.load(f)
    judge = ConditionJudge(tuple(arch["num_categories"]), arch["num_numerical"], arch["image_size"],
                           arch["base_channels"], arch["max_channels"], arch["feature_dim"])
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in load_file(weights).items()})
    return judge, params
