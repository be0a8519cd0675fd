"""The PyTorch twin of the mcLDM U-Net (tests/torch_unet.py) computes what mcjax computes from the same weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mcjax.compile import run_once
from mcjax.conditions import Conditions
from mcjax.models.layers import GroupNorm
from mcjax.models.unet import ConditionalUNet, head_major_attention

torch = pytest.importorskip("torch")
torch_unet = pytest.importorskip("tests.torch_unet")

NUM_CATEGORIES = (3, 2)
FIELDS = dict(num_categories=NUM_CATEGORIES, num_numerical=2, out_channels=4, base_channels=16,
              channel_multipliers=(1, 2), blocks_per_level=1, attention_levels=(1,), num_heads=2, head_dim=8,
              dropout=0.0, time_embedding_dim=16, condition_embedding_dim=3, condition_channels=4)
# Row 0 fully observed, row 1 partly masked (a NaN numerical), row 2 fully masked.
CONDITIONS = Conditions(jnp.array([[1, 2], [0, 1], [0, 0]], jnp.int32),
                        jnp.array([[0.3, 0.9], [jnp.nan, 0.1], [jnp.nan, jnp.nan]], jnp.float32))
T_B = jnp.array([0, 417, 999], jnp.int32)


def _twin(activation, numerical_missing="indicator"):
    """(flax model, random variables, the torch twin loaded with them, inputs x [B, H, W, C])."""
    model = ConditionalUNet(activation=activation, numerical_missing=numerical_missing, **FIELDS)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 4))
    variables = torch_unet.random_variables(model, x, T_B, CONDITIONS)
    fields = {k: v for k, v in FIELDS.items() if k not in ("num_categories", "num_numerical")}
    twin = torch_unet.ConditionalUNet(NUM_CATEGORIES, 2, in_channels=4, activation=activation,
                                      numerical_missing=numerical_missing, **fields)
    torch_unet.load_flax_params(twin, variables["params"], variables["batch_stats"])
    return model, variables, twin, x


def _torch_inputs(x, conditions, channels_last=False):
    x_t = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)
    if channels_last:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    return (x_t, torch.from_numpy(np.array(T_B)).long(), torch.from_numpy(np.array(conditions.cat_BxK)).long(),
            torch.from_numpy(np.array(conditions.num_BxJ)))


@pytest.mark.parametrize("activation,numerical_missing,channels_last", [("selu", "indicator", False),
                                                                         ("silu", "paper", True)])
def test_inference_matches_mcjax(activation, numerical_missing, channels_last):
    model, variables, twin, x = _twin(activation, numerical_missing)
    assert torch_unet.count_parameters(twin) == sum(p.size for p in jax.tree.leaves(variables["params"]))
    for norm in (m for m in twin.modules() if isinstance(m, torch.nn.GroupNorm)):  # ε is below the tolerance
        assert norm.eps == 1e-6 and norm.num_groups == np.gcd(32, norm.num_channels)
    expected = np.asarray(run_once(lambda v: model.apply(v, x, T_B, CONDITIONS), variables))
    if channels_last:
        twin = twin.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = twin.eval()(*_torch_inputs(x, CONDITIONS, channels_last)).permute(0, 2, 3, 1).numpy()
        unconditional = twin(*_torch_inputs(x, CONDITIONS)[:2]).permute(0, 2, 3, 1).numpy()
    assert np.abs(expected).mean() > 0.1  # a non-trivial output
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(unconditional[2], expected[2], rtol=0, atol=1e-4)  # row 2 is fully masked


def _train_mode_loss(model, variables, x, noise):
    def loss(params):
        eps, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, T_B, CONDITIONS,
                                   train=True, mutable=["batch_stats"])
        return jnp.mean(jnp.square(eps - noise)), updates["batch_stats"]

    return loss


def _torch_train_mode_loss(twin, x, noise):
    out = twin.train()(*_torch_inputs(x, CONDITIONS))
    return torch.mean(torch.square(out - torch.from_numpy(np.array(noise)).permute(0, 3, 1, 2)))


def test_training_mode_batch_statistics_match_mcjax():
    """train=True without dropout: batch norm normalises with batch statistics and updates its running averages."""
    model, variables, twin, x = _twin("selu")
    noise = jax.random.normal(jax.random.key(4), x.shape)
    expected_loss, expected_stats = run_once(_train_mode_loss(model, variables, x, noise), variables["params"])
    with torch.no_grad():
        loss = _torch_train_mode_loss(twin, x, noise)
    np.testing.assert_allclose(loss.item(), float(expected_loss), rtol=1e-5)
    for name in ("down_condition_0", "up_condition_1"):
        bn = twin.get_submodule(f"{name}.BatchNorm_0")
        for torch_stat, flax_stat in ((bn.running_mean, "mean"), (bn.running_var, "var")):
            np.testing.assert_allclose(torch_stat.numpy(), np.asarray(expected_stats[name]["BatchNorm_0"][flax_stat]),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # compiling the gradient takes ≈ 5 s on 2 cores
def test_loss_gradient_matches_mcjax():
    model, variables, twin, x = _twin("selu")
    noise = jax.random.normal(jax.random.key(4), x.shape)
    grads, _ = run_once(jax.grad(_train_mode_loss(model, variables, x, noise), has_aux=True), variables["params"])
    _torch_train_mode_loss(twin, x, noise).backward()
    grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in twin.parameters()])).item()
    expected_norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))))
    np.testing.assert_allclose(grad_norm, expected_norm, rtol=1e-4)
    for name, kernel in (("down_condition_0.Dense_0", grads["down_condition_0"]["Dense_0"]["kernel"]),
                         ("ResBlock_1.Conv_1", np.transpose(grads["ResBlock_1"]["Conv_1"]["kernel"], (3, 2, 0, 1)))):
        np.testing.assert_allclose(twin.get_submodule(name).weight.grad.numpy(), np.asarray(kernel).T
                                   if kernel.ndim == 2 else kernel, rtol=1e-3, atol=1e-4)


def test_mismatched_trees_are_rejected():
    model, variables, twin, _ = _twin("selu")
    params = dict(variables["params"])
    params.pop("Conv_1")
    with pytest.raises(ValueError, match="Conv_1"):
        torch_unet.load_flax_params(twin, params, variables["batch_stats"])


@pytest.mark.parametrize("train", [False, True])
def test_mcjax_attention_and_group_norm_are_flax_maths(train):
    """The twin copies flax's formulas; mcjax computes them in a faster order, which must not change the function
    (nor, in training, the dropout mask drawn from the same key)."""
    q, k, v = (np.random.default_rng(i).normal(size=(2, 16, 2, 8)).astype(np.float32) for i in range(3))
    x = (3.0 * np.random.default_rng(3).normal(size=(2, 4, 4, 48)) + 1.0).astype(np.float32)
    params = {"params": {"scale": jnp.linspace(0.5, 1.5, 48), "bias": jnp.linspace(-1, 1, 48)}}

    def both(q, k, v, x, rng):
        kw = dict(dropout_rng=rng, dropout_rate=0.3, deterministic=not train)
        return ((head_major_attention(q, k, v, **kw), nn.dot_product_attention(q, k, v, **kw)),
                (GroupNorm(16).apply(params, x), nn.GroupNorm(num_groups=16, epsilon=1e-6).apply(params, x)))

    (ours, flax_attention), (our_norm, flax_norm) = run_once(both, q, k, v, x, jax.random.key(4))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(flax_attention), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(our_norm), np.asarray(flax_norm), atol=1e-5)
