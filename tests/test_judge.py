"""The condition judge (mcjax.models.judge, mcjax.train.judge) and the control scores (mcjax.eval.control)."""

import os

import numpy as np
import pytest
import scipy.linalg
from mcjax.configs.geobiked_ldm import get_config

from mcjax import image_metrics
from mcjax.conditions import Conditions, ConditionSpec
from mcjax.data.images import load_images
from mcjax.errors import InputError
from mcjax.eval import control
from mcjax.models.judge import ConditionJudge, load_judge
from mcjax.train import judge as judge_training

SPEC = ConditionSpec(("style", "rim"), (("a", "b", "c"), ("x", "y")), ("teeth",), (20.0,), (60.0,))


def _verdicts(categories, numbers):
    categories = np.asarray(categories, np.int32)
    return control.Verdicts(categories, np.asarray(numbers, np.float32), np.zeros((len(categories), 2), np.float32))


def test_only_given_conditions_are_scored():
    verdicts = _verdicts([[1, 2], [2, 2], [3, 1], [1, 1]], [[0.5], [0.0], [1.0], [0.25]])
    given = Conditions(np.array([[1, 0], [1, 2], [3, 0], [0, 0]]),  # 0: masked or missing
                       np.array([[0.5], [np.nan], [0.75], [np.nan]], np.float32))
    scores = control.condition_scores(verdicts, given, SPEC)
    assert scores["accuracy_per_condition"] == {"style": pytest.approx(2 / 3), "rim": 1.0}
    assert scores["condition_accuracy"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert scores["numerical_error"]["teeth"] == pytest.approx(0.125 * 40.0)  # |1.0 - 0.75| / 2 rows × span 40
    nothing = Conditions(np.zeros((4, 2), np.int64), np.full((4, 1), np.nan, np.float32))
    assert control.condition_scores(verdicts, nothing, SPEC) == {
        "condition_accuracy": None, "accuracy_per_condition": {"style": None, "rim": None},
        "numerical_error": {"teeth": None}}


def test_frechet_distance_matches_the_matrix_square_root_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.5, size=(200, 6)) @ rng.normal(size=(6, 6))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert image_metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert abs(image_metrics.frechet_distance(a, a)) < 1e-8
    with pytest.raises(InputError, match="Fréchet distance"):
        image_metrics.frechet_distance(a, b[:, :5])


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """A judge trained on 600 rendered 32 px bikes (about 20 s on 2 CPU cores), scored on 200 held-out ones."""
    config = get_config("smoke")
    config.data.render_cache_dir = str(tmp_path_factory.mktemp("renders"))
    config.train.progress = False
    config.judge.update(dict(steps=150, batch_size=32, base_channels=8, max_channels=32, feature_dim=32,
                             max_train_images=600, learning_rate=3e-3))
    images = load_images(config.data)
    workdir = str(tmp_path_factory.mktemp("judge"))
    judge, params = judge_training.condition_judge(config, workdir, images)
    return config, workdir, images, judge, params


def test_the_judge_learns_conditions_from_rendered_bikes(judged):
    config, workdir, images, judge, params = judged
    data = images.table
    rows = data.test_rows[:200]
    verdicts = control.judge_rows(judge, params, images.images_NxHxWx3, rows)
    truth = Conditions(*(np.asarray(a)[:200] for a in data.test_conditions))
    scores = control.condition_scores(verdicts, truth, data.stats.conditions)
    cat = np.asarray(truth.cat_BxK)
    for name in ("BikeStyle", "Fork type", "bottle DOWNTUBE0 show OHCLASS: True"):  # the less lopsided ones
        k = data.stats.conditions.categorical_names.index(name)
        majority = np.max(np.bincount(cat[:, k])) / len(cat)  # always answering the commonest value
        assert scores["accuracy_per_condition"][name] > majority + 0.1, (name, scores, majority)
    # Conditions that do not belong to the images score worse than their own.
    shuffled = Conditions(cat[np.random.default_rng(0).permutation(200)], np.asarray(truth.num_BxJ))
    assert control.condition_scores(verdicts, shuffled, data.stats.conditions)["condition_accuracy"] < \
        scores["condition_accuracy"] - 0.1
    # The stage's report is the same judge on every real test image.
    report = judge_training.score_on_test_images(judge, params, images, 64)
    assert report["num_images"] == len(data.test_rows)
    assert os.path.exists(os.path.join(workdir, "judge", "report.json"))


def test_generated_images_equal_to_the_real_ones_score_the_ceiling(judged):
    config, _, images, judge, params = judged
    data = images.table
    rows = data.test_rows[:64]
    real_images = np.asarray(images.images_NxHxWx3[rows])
    judging = control.Judging(judge, params, data.stats.conditions,
                              control.judge_rows(judge, params, images.images_NxHxWx3, rows))
    given = Conditions(*(np.asarray(a)[:64] for a in data.test_conditions))
    scores = control.level_scores(judging, real_images, given, 48, with_fd=True)
    assert scores["condition_accuracy"] == scores["condition_accuracy_real"]
    assert scores["fd"] == pytest.approx(0.0, abs=1e-6) and scores["fd_num_images"] == 64 and scores["fd_small_sample"]
    noisy = np.clip(real_images + np.random.default_rng(0).normal(0, 40, real_images.shape), 0, 255).astype(np.uint8)
    worse = control.level_scores(judging, noisy, given, 48, with_fd=True)
    assert worse["fd"] > 1e-3 and worse["condition_accuracy"] <= scores["condition_accuracy"]
    assert control.level_scores(judging, real_images, given, 48, with_fd=False)["fd"] is None


def test_the_judge_is_reused_while_its_inputs_match_and_retrained_when_they_change(judged, monkeypatch):
    config, workdir, images, judge, params = judged
    monkeypatch.setattr(judge_training, "train_judge", lambda *a, **k: pytest.fail("retrained an unchanged judge"))
    again, again_params = judge_training.condition_judge(config, workdir, images)
    assert again == judge
    np.testing.assert_array_equal(again_params["numbers"]["kernel"], np.asarray(params["numbers"]["kernel"]))
    changed = config.copy_and_resolve_references()
    changed.judge.seed = 1
    monkeypatch.setattr(judge_training, "train_judge", lambda judge, *a, **k: {"retrained": True})
    monkeypatch.setattr(judge_training, "score_on_test_images", lambda *a: {"num_images": 0,
                        "accuracy_per_condition": {}, "numerical_error": {}})
    monkeypatch.setattr(judge_training, "save_judge", lambda judge, params, tmp: os.makedirs(tmp, exist_ok=True))
    monkeypatch.setattr(judge_training, "load_judge", lambda directory: "reloaded")
    assert judge_training.condition_judge(changed, str(workdir), images) == "reloaded"


def test_no_judge_when_its_steps_are_zero_and_bad_sizes_are_clear():
    config = get_config("smoke")
    config.judge.steps = 0
    assert judge_training.condition_judge(config, "/nonexistent", images=None) is None
    with pytest.raises(InputError, match="power-of-two image size"):
        _ = ConditionJudge((3,), 1, 48).num_levels
    with pytest.raises(FileNotFoundError, match="No condition judge"):
        load_judge("/nonexistent")
