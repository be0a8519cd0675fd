"""KL autoencoder training: loss terms, a jitted step, and a short run that learns to reconstruct."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mcjax.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, init_variables
from mcjax.train.autoencoder import autoencoder_loss, make_train_step, train_autoencoder

CONFIG = AutoencoderKLConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4)
# Threefry-keyed initialisation takes XLA:CPU seconds to compile per parameter; "rbg" keys compile fast.
INIT_KEY = jax.random.key(0, impl="rbg")


def blobs_and_stripes(n, size=16, seed=0):
    """Images in [-1, 1]: a Gaussian blob at a random place or stripes of a random period and colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for i in range(n):
        colour = rng.uniform(-1, 1, 3)
        if i % 2:
            cy, cx = rng.uniform(0.2, 0.8, 2)
            mask = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
        else:
            mask = (np.sin(2 * np.pi * xx * rng.integers(1, 4)) > 0).astype(float)
        images.append(mask[..., None] * colour)
    return np.asarray(images, np.float32)


@pytest.fixture(scope="module")
def variables():
    return init_variables(AutoencoderKL(CONFIG), INIT_KEY)


def test_loss_terms(variables):
    module = AutoencoderKL(CONFIG)
    images = blobs_and_stripes(4)
    loss_fn = jax.jit(lambda p, x, k: autoencoder_loss(module, p, x, k, kl_weight=0.5))
    loss, aux = loss_fn(variables["params"], images, jax.random.key(1))
    assert aux["reconstruction"].shape == aux["kl"].shape == (4,)
    assert np.all(aux["kl"] >= 0)
    np.testing.assert_allclose(loss, np.mean(aux["reconstruction"]) + 0.5 * np.mean(aux["kl"]), rtol=1e-6)


def test_train_step_jits_once_with_donation(variables):
    module = AutoencoderKL(CONFIG)
    optimizer = optax.adam(1e-3)
    params = jax.tree.map(jnp.copy, variables["params"])
    opt_state = optimizer.init(params)
    step = jax.jit(
        chex.assert_max_traces(make_train_step(module, optimizer, reconstruction="l2"), n=1), donate_argnums=(0, 1)
    )
    images = blobs_and_stripes(4)
    for i in range(2):
        params, opt_state, metrics = step(params, opt_state, images, jax.random.key(i))
    assert set(metrics) == {"loss", "reconstruction", "kl", "grad_norm", "param_norm"}
    assert all(np.isfinite(v) for v in metrics.values())
    with pytest.raises(ValueError, match="reconstruction='l3'"):
        make_train_step(module, optimizer, reconstruction="l3")


def test_training_improves_reconstruction(variables):
    module = AutoencoderKL(CONFIG)
    images = blobs_and_stripes(64)
    trained, history = train_autoencoder(
        module, variables, images, steps=100, batch_size=8, learning_rate=3e-3, key=jax.random.key(1)
    )
    assert history["loss"].shape == history["kl"].shape == (100,)
    error = jax.jit(lambda v: jnp.mean(jnp.abs(module.apply(v, images)[0] - images)))
    before, after = float(error(variables)), float(error(trained))
    assert after < 0.5 * before, (before, after)


def test_nan_loss_raises_with_step():
    config = AutoencoderKLConfig(
        block_out_channels=(8,), layers_per_block=1, norm_num_groups=4, mid_block_add_attention=False
    )
    module = AutoencoderKL(config)
    images = np.ones((4, 4, 4, 3), np.float32)
    images[0, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"autoencoder loss became NaN/inf at step 4 \(loss nan\)"):
        train_autoencoder(
            module,
            init_variables(module, INIT_KEY),
            images,
            steps=6,
            batch_size=1,
            learning_rate=1e-3,
            key=jax.random.key(0),
            steps_per_chunk=2,
        )
