"""Training the condition judge: a stage of its own in the mcLDM pipeline, kept in ``W/judge``.

The judge learns every condition from the training split's real images (cross-entropy per categorical head, squared
error in scaled units per numerical one; labels the data lacks are left out of the loss) and is scored on the real
test images (``W/judge/report.json``). ``W/judge/key`` records what it was trained from — the images, the split and
``config.judge`` — so a rerun reuses it, and a changed image set or judge setting retrains it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mcjax.compile import run_once
from mcjax.conditions import MISSING_INDEX, Conditions
from mcjax.data.images import ImageData, content_key
from mcjax.errors import InputError
from mcjax.eval.control import condition_scores, judge_rows
from mcjax.io import atomic_write_text
from mcjax.models.judge import ConditionJudge, judge_from_config, load_judge, save_judge
from mcjax.train import loop
from mcjax.train.metrics import ProgressBar

JUDGE_DIR, KEY_FILE, REPORT_FILE = "judge", "key", "report.json"


def judge_loss(judge: ConditionJudge, params, images_BxHxWx3, conditions: Conditions):
    """(loss, per-head losses): the mean over heads of each head's mean over the rows that have its label."""
    out = judge.apply({"params": params}, images_BxHxWx3)
    heads = []
    for k, logits in enumerate(out.logits):
        labels = conditions.cat_BxK[:, k]
        given = (labels != MISSING_INDEX).astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels - 1, 0))
        heads.append(jnp.sum(ce * given) / jnp.maximum(jnp.sum(given), 1.0))
    given_num = ~jnp.isnan(conditions.num_BxJ)
    squared = jnp.square(out.numbers_BxJ - jnp.nan_to_num(conditions.num_BxJ)) * given_num
    heads.extend(jnp.sum(squared, axis=0) / jnp.maximum(jnp.sum(given_num, axis=0), 1))
    per_head = jnp.stack(heads)
    return jnp.mean(per_head), per_head


def train_judge(judge: ConditionJudge, images_NxHxWx3_uint8, conditions: Conditions, judge_config,
                progress: ProgressBar | None = None):
    """AdamW with a cosine-decayed learning rate on uint8 images held on the device (converted per batch); step t
    draws its batch from ``fold_in(key, t)``. Returns the parameters."""
    steps, batch_size = int(judge_config.steps), int(judge_config.batch_size)
    key = jax.random.key(int(judge_config.seed))
    images = jnp.asarray(images_NxHxWx3_uint8)
    labels = jax.tree.map(jnp.asarray, conditions)
    optimizer = optax.adamw(optax.cosine_decay_schedule(float(judge_config.learning_rate), steps),
                            weight_decay=float(judge_config.weight_decay))
    params = run_once(lambda k: judge.init(k, jnp.zeros((1, *images.shape[1:]), jnp.float32))["params"],
                      jax.random.fold_in(key, 0))

    @functools.partial(jax.jit, static_argnums=3, donate_argnums=0)
    def run_chunk(carry, images, labels, num_steps: int, first_step):
        def step(state):
            (params, opt_state), t = state
            rows = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, images.shape[0])
            batch = images[rows].astype(jnp.float32) / 127.5 - 1.0
            (loss, _), grads = jax.value_and_grad(judge_loss, argnums=1, has_aux=True)(
                judge, params, batch, jax.tree.map(lambda a: a[rows], labels))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return ((optax.apply_updates(params, updates), opt_state), t + 1), {"loss": loss}

        (carry, _), metrics = loop.scan_steps(step, (carry, first_step), num_steps)
        return carry, metrics

    chunk_size = loop.steps_per_call(int(judge_config.steps_per_chunk), 200)
    params, _ = loop.run((params, optimizer.init(params)), 0, steps,
                         lambda carry, first, num: run_chunk(carry, images, labels, num, first),
                         chunk_size=chunk_size, log=lambda first, end, m: float(np.mean(m["loss"])),
                         log_every=max(chunk_size, 50), progress=progress, name="condition judge")
    return params


def training_positions(judge_config, num_train: int) -> np.ndarray:
    """Positions in the training split: all, or a seeded ``judge.max_train_images`` of them (bounds the memory the
    stage needs)."""
    limit = int(judge_config.max_train_images)
    if not limit or limit >= num_train:
        return np.arange(num_train)
    return np.sort(np.random.default_rng(int(judge_config.seed)).choice(num_train, limit, replace=False))


def judge_key(config, images: ImageData) -> str:
    """What a judge is made from: the images, the split and the judge's settings."""
    data = images.table
    text = json.dumps([content_key(images.images_NxHxWx3), data.train_rows.tolist(), data.test_rows.tolist(),
                       data.stats.conditions.to_dict(), config.judge.to_dict()])
    return hashlib.sha256(text.encode()).hexdigest()


def score_on_test_images(judge, params, images: ImageData, batch_size: int) -> dict:
    """The judge on every real test image, against the labels the data has: its ceiling."""
    data = images.table
    verdicts = judge_rows(judge, params, images.images_NxHxWx3, data.test_rows, batch_size)
    conditions = Conditions(*(np.asarray(a) for a in data.test_conditions))
    return {"num_images": len(data.test_rows), **condition_scores(verdicts, conditions, data.stats.conditions)}


def condition_judge(config, workdir: str, images: ImageData) -> tuple[ConditionJudge, dict] | None:
    """(module, params) of the run's judge, trained here once (None when ``judge.steps`` is 0: no judge)."""
    judge_config = config.judge
    if int(judge_config.steps) < 1:
        return None
    directory = os.path.join(workdir, JUDGE_DIR)
    key = judge_key(config, images)
    key_path = os.path.join(directory, KEY_FILE)
    if os.path.exists(key_path):
        with open(key_path, encoding="utf-8") as f:
            if f.read() == key:
                return load_judge(directory)
    data = images.table
    spec = data.stats.conditions
    judge = judge_from_config(judge_config, spec.num_categories, len(spec.numerical_names),
                              int(config.data.image_size))
    positions = training_positions(judge_config, len(data.train_rows))
    if not len(positions):
        raise InputError("The condition judge has no training images.")
    print(f"mcjax: training the condition judge on {len(positions)} images", flush=True)
    conditions = Conditions(*(np.asarray(a)[positions] for a in data.train_conditions))
    params = train_judge(judge, np.asarray(images.images_NxHxWx3[data.train_rows[positions]]), conditions,
                         judge_config,
                         ProgressBar(int(judge_config.steps), "judge steps", config.train.progress))
    report = score_on_test_images(judge, params, images, int(judge_config.batch_size))
    tmp = directory + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_judge(judge, params, tmp)
    atomic_write_text(os.path.join(tmp, REPORT_FILE), json.dumps(report, indent=1))
    atomic_write_text(os.path.join(tmp, KEY_FILE), key)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    print(f"mcjax: condition judge on the {report['num_images']} real test images: {accuracy_text(report)}",
          flush=True)
    return load_judge(directory)


def accuracy_text(scores: dict) -> str:
    """``BikeStyle 0.93, …; Teeth on chainring ± 1.2`` from ``condition_scores``."""
    parts = [f"{name} {a:.3f}" for name, a in scores["accuracy_per_condition"].items() if a is not None]
    parts += [f"{name} ±{e:.3g}" for name, e in scores["numerical_error"].items() if e is not None]
    return ", ".join(parts)
