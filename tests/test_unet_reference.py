"""The authors' U-Net layout (mcjax.models.unet_reference): its size, and parity with a PyTorch twin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcjax.configs import geobiked_ldm

from mcjax.compile import run_once
from mcjax.conditions import Conditions
from mcjax.data import tables
from mcjax.errors import InputError
from mcjax.models.ldm import unet_from_config
from mcjax.models.unet_reference import ReferenceUNet, authors_group_count, sinusoidal_features

NUM_CATEGORIES = (3, 2)
# 32 start channels: with fewer than 32 channels the authors' GroupNorm gives each channel a group, and a constant
# (condition) channel alone in its group normalises float32 rounding noise by 1/sqrt(ε), far above the tolerance.
FIELDS = dict(num_categories=NUM_CATEGORIES, num_numerical=2, out_channels=4, base_channels=32, levels=2,
              blocks_per_level=2, attention_levels=(1,), num_heads=2, head_dim=8, dropout=0.0,
              time_embedding_dim=16, condition_embedding_dim=3, condition_channels=3)
# Row 0 fully observed, row 1 partly masked (a NaN numerical), row 2 fully masked.
CONDITIONS = Conditions(jnp.array([[1, 2], [0, 1], [0, 0]], jnp.int32),
                        jnp.array([[0.3, 0.9], [jnp.nan, 0.1], [jnp.nan, jnp.nan]], jnp.float32))
T_B = jnp.array([0, 417, 999], jnp.int32)


def _parameters(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_paper_config_is_the_authors_network_size():
    """115,763,732 parameters besides the embedding tables, counted with the authors' code (8 GeoBiked conditions,
    embedding 10 each, 64 × 64 × 4 latents)."""
    config = geobiked_ldm.get_config("paper")
    stats = tables.TableStats.fit(tables.table_from_config(config.data))
    unet = unet_from_config(config.model, stats.conditions, out_channels=4)
    assert isinstance(unet, ReferenceUNet) and len(stats.conditions.num_categories) + unet.num_numerical == 8
    shapes = jax.eval_shape(lambda: unet.init(jax.random.key(0), jnp.zeros((1, 64, 64, 4)), jnp.zeros((1,), int)))
    params = dict(shapes["params"])
    embedding = params.pop("ConditionEmbedding_0")
    assert _parameters(params) == 115_763_732
    assert _parameters(embedding) == 10 * sum(n + 1 for n in stats.conditions.num_categories) + 20  # + Linear(1, 10)
    assert params["middle_0"]["Conv_0"]["kernel"].shape == (3, 3, 1024, 1024)  # bottleneck 1024 at 4 × 4


def test_authors_group_count():
    assert [authors_group_count(c) for c in (16, 64, 74, 138, 266, 522, 1034, 2058, 40)] == [
        16, 32, 2, 23, 19, 29, 22, 21, 10]


def test_reference_layout_needs_doubling_channels():
    config = geobiked_ldm.get_config("paper").model
    config.channel_multipliers = (1, 2, 4, 4)
    spec = tables.TableStats.fit(tables.table_from_config(geobiked_ldm.get_config().data)).conditions
    with pytest.raises(InputError, match=r"must be \(1, 2, 4, 8\)"):
        unet_from_config(config, spec, out_channels=4)
    config.layout = "unknown"
    with pytest.raises(InputError, match="Unknown U-Net layout 'unknown'"):
        unet_from_config(config, spec, out_channels=4)


def test_input_must_divide_by_two_to_the_levels():
    model = ReferenceUNet(**FIELDS)
    with pytest.raises(InputError, match="not divisible by 2\\^2"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((3, 6, 8, 4)), T_B, CONDITIONS))


def test_sinusoidal_features_interleave_sin_and_cos():
    features = np.asarray(sinusoidal_features(jnp.array([0.0, 3.0]), 8))
    np.testing.assert_allclose(features[0], [0, 1, 0, 1, 0, 1, 0, 1], atol=1e-7)
    np.testing.assert_allclose(features[1, :2], [np.sin(3.0), np.cos(3.0)], rtol=1e-6)
    np.testing.assert_allclose(features[1, 2:4], [np.sin(3.0 / 10.0), np.cos(3.0 / 10.0)], rtol=1e-5)


torch = pytest.importorskip("torch")
torch_unet = pytest.importorskip("tests.torch_unet")
torch_unet_reference = pytest.importorskip("tests.torch_unet_reference")


def _twin():
    model = ReferenceUNet(**FIELDS)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 4))
    variables = torch_unet.random_variables(model, x, T_B, CONDITIONS)
    fields = {k: v for k, v in FIELDS.items() if k not in ("num_categories", "num_numerical")}
    twin = torch_unet_reference.ReferenceUNet(NUM_CATEGORIES, 2, in_channels=4, **fields)
    torch_unet.load_flax_params(twin, variables["params"], variables["batch_stats"])
    return model, variables, twin, x


def _torch(a, dtype=None):
    return torch.from_numpy(np.array(a)) if dtype is None else torch.from_numpy(np.array(a)).to(dtype)


def test_inference_matches_the_pytorch_twin():
    model, variables, twin, x = _twin()
    assert torch_unet.count_parameters(twin) == _parameters(variables["params"])
    expected = np.asarray(run_once(lambda v: model.apply(v, x, T_B, CONDITIONS), variables))
    with torch.no_grad():
        twin = twin.eval()
        x_t = _torch(x).permute(0, 3, 1, 2)
        out = twin(x_t, _torch(T_B, torch.long), _torch(CONDITIONS.cat_BxK, torch.long), _torch(CONDITIONS.num_BxJ))
        unconditional = twin(x_t, _torch(T_B, torch.long))
    assert np.abs(expected).mean() > 0.1  # a non-trivial output
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(unconditional.permute(0, 2, 3, 1).numpy()[2], expected[2], rtol=0, atol=1e-4)


def test_training_mode_matches_the_pytorch_twin():
    """train=True without dropout: batch norm normalises with the batch's statistics."""
    model, variables, twin, x = _twin()
    expected, _ = run_once(lambda v: model.apply(v, x, T_B, CONDITIONS, train=True, mutable=["batch_stats"]),
                           variables)
    with torch.no_grad():
        out = twin.train()(_torch(x).permute(0, 3, 1, 2), _torch(T_B, torch.long),
                           _torch(CONDITIONS.cat_BxK, torch.long), _torch(CONDITIONS.num_BxJ))
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), np.asarray(expected), rtol=0, atol=1e-4)


def test_attention_heads_are_the_authors_channel_major_blocks():
    """Transposing q/k/v per position (ordinary attention) gives a different function: the layout is not a no-op."""
    model, variables, twin, x = _twin()
    attention = twin.down_1.attention.eval()
    h = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        out = attention(h)
        b, c, n = 2, 64, 16
        x_flat = h.reshape(b, c, n)
        q, k, v = attention.qkv(attention.GroupNorm_0(x_flat).transpose(1, 2)).view(b, n, 3, 2, 8).permute(
            2, 0, 3, 1, 4)
        per_position = attention.proj_out(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(
            1, 2).reshape(b, n, 16)).transpose(1, 2)
    assert float((out.reshape(b, c, n) - (x_flat + per_position)).abs().max()) > 1e-3
