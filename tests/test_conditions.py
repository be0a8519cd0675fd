import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcjax import conditions as cl
from mcjax.models import embedding

SPEC = cl.ConditionSpec(
    categorical_names=("style", "size"),
    vocabularies=(("BMX", "MTB", "ROAD"), ("S", "M")),
    numerical_names=("teeth",),
    numerical_min=(20.0,),
    numerical_max=(60.0,),
)


def _batch(n):
    cat = jnp.tile(jnp.array([[2, 1]], jnp.int32), (n, 1))
    return cl.Conditions(cat, jnp.full((n, 1), 0.25, jnp.float32))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_masking_rate_matches_p(p):
    masked = cl.mask_conditions(jax.random.key(0), _batch(20000), jnp.float32(p))
    dropped = np.concatenate([np.asarray(masked.cat_BxK) == cl.MISSING_INDEX, np.isnan(masked.num_BxJ)], axis=1)
    assert abs(dropped.mean() - p) < 0.01
    # each condition independently: the per-column rates match too, and columns are uncorrelated
    assert np.allclose(dropped.mean(axis=0), p, atol=0.02)
    if 0 < p < 1:
        assert abs(np.corrcoef(dropped[:, 0], dropped[:, 1])[0, 1]) < 0.03


def test_all_at_once_drops_whole_rows():
    masked = cl.mask_conditions(jax.random.key(1), _batch(4000), jnp.float32(0.3), mode="all_at_once")
    dropped = np.concatenate([np.asarray(masked.cat_BxK) == 0, np.isnan(masked.num_BxJ)], axis=1)
    assert np.all(dropped.all(axis=1) | ~dropped.any(axis=1))
    assert abs(dropped[:, 0].mean() - 0.3) < 0.03


def test_masking_is_pure_and_deterministic():
    batch = _batch(64)
    a = cl.mask_conditions(jax.random.key(3), batch, jnp.float32(0.5))
    b = cl.mask_conditions(jax.random.key(3), batch, jnp.float32(0.5))
    assert np.array_equal(a.cat_BxK, b.cat_BxK)
    assert np.array_equal(np.isnan(a.num_BxJ), np.isnan(b.num_BxJ))
    assert np.all(np.asarray(batch.cat_BxK) == [2, 1])  # input untouched


def test_numerical_missing_modes():
    num = jnp.array([[0.0], [jnp.nan]])
    assert np.array_equal(embedding.numerical_inputs(num, "indicator")[:, 0], [[0.0, 0.0], [0.0, 1.0]])
    assert np.array_equal(embedding.numerical_inputs(num, "paper")[:, 0, 0], [0.0, -1.0])
    assert np.array_equal(embedding.numerical_inputs(num, "reference")[:, 0, 0], [0.0, 0.0])
    with pytest.raises(ValueError, match="numerical missing mode"):
        embedding.numerical_inputs(num, "zero")


@pytest.mark.parametrize("missing", cl.NUMERICAL_MISSING_MODES)
def test_embedding_shapes_and_missing_path(missing):
    module = embedding.ConditionEmbedding(SPEC.num_categories, 1, embedding_dim=5, numerical_missing=missing)
    given = SPEC.encode({"style": "MTB", "size": "S", "teeth": 20}, batch_size=3)
    params = module.init(jax.random.key(0), given)
    e_y = module.apply(params, given)
    assert e_y.shape == (3, 3 * 5)
    none = module.apply(params, SPEC.encode({}, batch_size=1))[0]
    # missing categorical conditions use their own reserved row
    table = params["params"]["categorical_0"]
    assert table.shape == (4, 5)
    assert np.allclose(none[:5], table[0]) and np.allclose(e_y[0, :5], table[2])
    # an observed 0 (teeth=20 scales to 0) and a missing value are distinguishable only with the indicator
    same = np.allclose(e_y[0, 10:], none[10:])
    assert same == (missing == "reference")


def test_encode_partial_and_errors():
    c = SPEC.encode({"size": "M", "teeth": "40"}, batch_size=2)
    assert c.cat_BxK.tolist() == [[0, 2], [0, 2]]
    assert np.allclose(c.num_BxJ, 0.5)
    with pytest.raises(ValueError, match=r"Unknown condition\(s\) \['colour'\].*valid conditions"):
        SPEC.encode({"colour": "red"})
    with pytest.raises(ValueError, match=r"'GRAVEL'.*never seen in training.*'BMX', 'MTB', 'ROAD'"):
        SPEC.encode({"style": "GRAVEL"})
    with pytest.raises(ValueError, match="numerical"):
        SPEC.encode({"teeth": "many"})


def test_categories_compare_as_canonical_strings():
    spec = cl.ConditionSpec(("fork",), (("0", "1", "2"),), (), (), ())
    assert spec.encode({"fork": 1}).cat_BxK.tolist() == [[2]]
    assert spec.encode({"fork": "2.0"}).cat_BxK.tolist() == [[3]]


@pytest.mark.parametrize("p", [0.0, 0.4])
def test_missing_labels_stay_masked_and_observed_ones_are_masked_at_p(p):
    """The training mask is the data's own missingness plus the schedule's: p applies to the observed labels."""
    n = 20000
    missing_style = np.arange(n) % 3 == 0  # a third of the rows lack the style label, a quarter the number
    cat = jnp.where(jnp.asarray(missing_style)[:, None], jnp.array([[0, 1]]), jnp.array([[2, 1]])).astype(jnp.int32)
    num = jnp.where(jnp.asarray(np.arange(n) % 4 == 0)[:, None], jnp.nan, 0.25).astype(jnp.float32)
    given = np.asarray(cl.observed(cl.mask_conditions(jax.random.key(3), cl.Conditions(cat, num), jnp.float32(p))))
    assert not given[missing_style, 0].any() and not given[np.arange(n) % 4 == 0, 2].any()
    for column, labelled in ((0, ~missing_style), (1, np.ones(n, bool)), (2, np.arange(n) % 4 != 0)):
        assert abs(given[labelled, column].mean() - (1 - p)) < 0.015


def test_total_sparsity_target_counts_the_datas_own_gaps():
    """Target "total": a condition labelled in half the rows is masked at (0.6 - 0.5) / 0.5 = 0.2 of them, so 60 % of
    its labels are missing overall, like the fully labelled one's; one missing more often than p is left alone."""
    rates = (0.5, 1.0, 0.3)
    np.testing.assert_allclose(cl.label_drop_probability(jnp.float32(0.6), rates, "total"), [0.2, 0.6, 0.0], atol=1e-6)
    assert float(cl.label_drop_probability(jnp.float32(0.6), rates, "observed")) == pytest.approx(0.6)
    n = 30000
    labelled = np.random.default_rng(0).random((n, 3)) < np.array(rates)
    conditions = cl.Conditions(jnp.asarray(np.where(labelled[:, :2], 1, 0), jnp.int32),
                               jnp.asarray(np.where(labelled[:, 2:], 0.5, np.nan), jnp.float32))
    p_drop = cl.label_drop_probability(jnp.float32(0.6), rates, "total")
    given = np.asarray(cl.observed(cl.mask_conditions(jax.random.key(0), conditions, p_drop)))
    np.testing.assert_allclose(1 - given.mean(axis=0), [0.6, 0.6, 0.7], atol=0.015)


def test_masking_settings_are_validated():
    cl.validate_masking("per_condition", "total")
    with pytest.raises(ValueError, match="sparsity_target must be one of"):
        cl.validate_masking("per_condition", "all")
    with pytest.raises(ValueError, match="needs train.masking 'per_condition'"):
        cl.validate_masking("all_at_once", "total")
