"""The conditional U-Net of the mcLDM."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mcjax.compile import run_once
from mcjax.conditions import Conditions, ConditionSpec, all_missing
from mcjax.models.ldm import unet_from_config
from mcjax.models.unet import ConditionalUNet, timestep_embedding

SPEC = ConditionSpec(("style", "rim"), (("a", "b", "c"), ("x", "y")), ("teeth",), (20.0,), (50.0,))
CONDITIONS = Conditions(jnp.array([[1, 2], [3, 1]], jnp.int32), jnp.array([[0.3], [jnp.nan]], jnp.float32))


def _tiny(**overrides) -> ConditionalUNet:
    config = ml_collections.ConfigDict(dict(
        base_channels=8, channel_multipliers=(1, 2), blocks_per_level=1, attention_levels=(1,), num_heads=2,
        head_dim=4, dropout=0.1, activation="selu", time_embedding_dim=16, condition_embedding_dim=3,
        condition_channels=4, numerical_missing="indicator", layout="mcjax"))
    config.update(overrides)
    return unet_from_config(config, SPEC, out_channels=4)


def _init(model, x):
    keys = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}
    return run_once(lambda k, x: model.init(k, x, jnp.array([3, 700]), CONDITIONS), keys, x)



# (1, 2) with attention at 1 is _tiny's own layout, which the tests below run anyway.
@pytest.mark.parametrize("multipliers,attention", [((1,), ()), pytest.param((1, 2), (1,), marks=pytest.mark.slow),
                                                   ((1, 2, 2), (0, 2)),
                                                   pytest.param((1, 2, 3, 4), (1, 2, 3), marks=pytest.mark.slow)])
def test_output_shape_for_every_level_config(multipliers, attention):
    model = _tiny(channel_multipliers=multipliers, attention_levels=attention)
    x = jnp.ones((2, 16, 8, 4))
    variables = _init(model, x)
    out = run_once(lambda v: model.apply(v, x, jnp.array([3, 700]), CONDITIONS), variables)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    injections = [k for k in variables["params"] if "condition_" in k]
    assert len(injections) == 2 * len(multipliers)  # every level, down and up


# The reference layout's conditioning is checked against the authors' network in test_unet_reference.py.
@pytest.mark.parametrize("layout", ["mcjax", pytest.param("reference", marks=pytest.mark.slow)])
def test_conditions_change_the_output_and_all_masked_is_unconditional(layout):
    model = _tiny(layout=layout)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
    variables = _init(model, x)
    t = jnp.array([10, 10])
    swapped = CONDITIONS._replace(cat_BxK=CONDITIONS.cat_BxK[::-1])
    conditional, other, masked, unconditional = run_once(lambda v: (
        model.apply(v, x, t, CONDITIONS), model.apply(v, x, t, swapped),
        model.apply(v, x, t, all_missing(SPEC.num_categories, 1, 2)), model.apply(v, x, t)), variables)
    assert float(jnp.max(jnp.abs(conditional - other))) > 1e-3
    np.testing.assert_array_equal(np.asarray(unconditional), np.asarray(masked))
    assert float(jnp.max(jnp.abs(masked - conditional))) > 1e-3


def test_dropout_only_in_training_and_batch_norm_statistics_update():
    model = _tiny(dropout=0.5)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 4))
    variables = _init(model, x)
    t = jnp.array([1, 2])
    def run(v, key, train):
        return model.apply(v, x, t, CONDITIONS, train=train, rngs={"dropout": key}, mutable=["batch_stats"])

    keys = jax.random.key(3, impl="rbg"), jax.random.key(4, impl="rbg")
    (eval_a, _), (eval_b, _), (train_a, stats), (train_b, _) = run_once(
        lambda v, a, b: (run(v, a, False), run(v, b, False), run(v, a, True), run(v, b, True)), variables, *keys)
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    assert float(jnp.max(jnp.abs(train_a - train_b))) > 1e-4
    before = jax.tree.leaves(variables["batch_stats"])
    assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in zip(jax.tree.leaves(stats["batch_stats"]), before))


def test_bad_shapes_and_levels_are_rejected():
    model = _tiny(channel_multipliers=(1, 2, 2))
    with pytest.raises(ValueError, match="not divisible by 2\\^2"):
        _init(model, jnp.ones((2, 6, 8, 4)))
    with pytest.raises(ValueError, match="attention_levels"):
        _init(_tiny(attention_levels=(2,)), jnp.ones((2, 8, 8, 4)))


def test_timestep_embedding():
    e = timestep_embedding(jnp.array([0, 5, 999]), 9)
    assert e.shape == (3, 9)
    np.testing.assert_allclose(np.asarray(e[0, :4]), 1.0)  # cos(0)
    assert float(jnp.max(jnp.abs(e[1] - e[2]))) > 0.1


def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32():
    x = jax.random.normal(jax.random.key(5), (2, 8, 8, 4))
    t = jnp.array([10, 500])
    full, half = _tiny(), _tiny(dtype="bfloat16")
    variables = _init(full, x)
    assert {leaf.dtype for leaf in jax.tree.leaves(_init(half, x)["params"])} == {jnp.dtype("float32")}
    out32, out16 = run_once(lambda v: (full.apply(v, x, t, CONDITIONS), half.apply(v, x, t, CONDITIONS)), variables)
    assert out16.dtype == jnp.float32
    error = float(jnp.linalg.norm(out16 - out32) / jnp.linalg.norm(out32))
    assert 0 < error < 0.05, error


@pytest.mark.parametrize("shape,kernel,padding", [((2, 2, 2, 8), (3, 3), "SAME"), ((2, 1, 3, 8), (3, 3), "SAME"),
                                                  ((2, 2, 2, 8), (3, 3), ((1, 1), (1, 1))),
                                                  ((2, 5, 5, 8), (3, 3), "SAME"), ((2, 2, 2, 8), (1, 1), "SAME")])
def test_convolutions_of_maps_smaller_than_the_kernel_are_lax_convolutions(shape, kernel, padding):
    """Such maps run as one product of their patches with the kernel (far faster on XLA:CPU): same function."""
    from jax import lax

    from mcjax.models.layers import conv_general_dilated

    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], 6))
    numbers = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    expected = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=numbers)
    ours = conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=numbers)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-5)
