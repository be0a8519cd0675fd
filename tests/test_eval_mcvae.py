"""mcVAE metrics that tell a generator from a regressor: the energy score and class fidelity."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcjax.conditions import Conditions, ConditionSpec
from mcjax.eval import mcvae as evaluation
from mcjax.models.layers import gaussian_kl


def test_energy_score_against_a_direct_computation():
    rng = np.random.default_rng(0)
    samples, y = rng.normal(size=(4, 3, 2)), rng.normal(size=(3, 2))
    expected = []
    for row in range(3):
        to_truth = np.mean([np.linalg.norm(samples[k, row] - y[row]) for k in range(4)])
        pairs = [np.linalg.norm(samples[a, row] - samples[b, row]) for a, b in itertools.permutations(range(4), 2)]
        expected.append(to_truth - 0.5 * np.mean(pairs))
    np.testing.assert_allclose(evaluation.energy_score(jnp.asarray(samples), jnp.asarray(y)), expected, rtol=1e-5)


def test_energy_score_prefers_the_true_distribution_to_its_mean():
    """Outcomes y ~ N(0, I): draws from N(0, I) score lower than a point mass at the mean (the regressor)."""
    key_y, key_x = jax.random.split(jax.random.key(0))
    y = jax.random.normal(key_y, (4000, 3))
    truth = jax.random.normal(key_x, (16, 4000, 3))
    point_mass = jnp.zeros((16, 4000, 3))
    assert float(jnp.mean(evaluation.energy_score(truth, y))) < float(jnp.mean(evaluation.energy_score(point_mass, y)))


def _classes(rng):
    """Two classes of a one-condition table: rows, their conditions and the class statistics."""
    spec = ConditionSpec(("style",), (("a", "b"),), (), (), ())
    labels = rng.integers(1, 3, size=400)
    x = rng.normal(size=(400, 3)) * np.where(labels[:, None] == 1, 0.1, 0.3) + labels[:, None]
    conditions = Conditions(labels[:, None].astype(np.int32), np.zeros((400, 0), np.float32))
    return spec, x, conditions, evaluation.class_targets(spec, x, conditions, min_rows=20)


def test_class_targets_and_a_spread_ratio_of_one_for_the_data_itself():
    spec, x, conditions, targets = _classes(np.random.default_rng(1))
    assert targets.names == ["style=a", "style=b"] and sum(targets.rows) == 400
    np.testing.assert_array_equal(targets.conditions.cat_BxK, [[1], [2]])
    # Designs that are the data itself: ratio 1, error 0.
    results = {"class_mean": targets.mean_CxD[None], "class_std": targets.std_CxD[None]}
    spread, error = evaluation.class_scores(results, targets, keypoint_scale_D=np.full(3, 100.0))
    np.testing.assert_allclose(spread, 1.0)
    np.testing.assert_allclose(error, 0.0)
    # The class means (a regressor): no spread, no error; a shifted class: the error in the table's units.
    results = {"class_mean": targets.mean_CxD[None] + [[0.0], [0.5]], "class_std": 0 * targets.std_CxD[None]}
    spread, error = evaluation.class_scores(results, targets, keypoint_scale_D=np.full(3, 100.0))
    np.testing.assert_allclose(spread, 0.0)
    np.testing.assert_allclose(error, [[0.0, 50.0]], atol=1e-9)
    assert evaluation.class_targets(spec, x, conditions, min_rows=1000) is None


def test_gaussian_kl_against_the_closed_form():
    mean_q, logvar_q, mean_p, logvar_p = 0.3, np.log(0.5), -0.2, np.log(2.0)
    var_q, var_p = 0.5, 2.0
    expected = 0.5 * (np.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)
    assert float(gaussian_kl(jnp.float32(mean_q), jnp.float32(logvar_q), jnp.float32(mean_p),
                             jnp.float32(logvar_p))) == pytest.approx(expected, rel=1e-5)
    # Against N(0, I), the standard prior's KL, as the loss has always computed it.
    mean, logvar = jnp.array([[0.3, -1.0]]), jnp.array([[0.1, -0.4]])
    np.testing.assert_allclose(gaussian_kl(mean, logvar, jnp.zeros((1, 2)), jnp.zeros((1, 2))),
                               gaussian_kl(mean, logvar), rtol=1e-6)
