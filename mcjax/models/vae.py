"""mcVAE: a VAE whose decoder sees [z; e_y] while the encoder q(z|x) sees the keypoints only.

Because the encoder is unconditioned, the KL term acts on z alone and the conditions reach the output only through
the decoder — which is what lets any subset of conditions steer generation from the prior.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcjax.conditions import ConditionEmbedding, Conditions

ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "selu": nn.selu, "silu": nn.silu, "gelu": nn.gelu,
                                    "tanh": jnp.tanh}


def activation_fn(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers with an activation after each (the output layer is added by the caller)."""

    widths: tuple[int, ...]
    activation: str = "relu"

    @nn.compact
    def __call__(self, h):
        act = activation_fn(self.activation)
        for width in self.widths:
            h = act(nn.Dense(width)(h))
        return h


class EmbeddedDense(nn.Module):
    """A linear embedding (no activation) followed by a Dense layer, as the reference's keypoint embedding and first
    encoder layer: act((x W_e + b_e) W + b).

    The two linear maps are re-associated as x (W_e W) + (b_e W + b) when that is cheaper — for GeoBiked (26 → 203 →
    128, batch 140) it cuts the encoder's multiply-adds by three quarters. Same parameters, same function, same
    gradients (up to float rounding): the 203-wide embedding of the paper is kept as parameters, never materialised.
    """

    embedding_dim: int
    features: int

    @nn.compact
    def __call__(self, x_BxD):
        embedding = nn.Dense(self.embedding_dim, name="embedding")
        dense = nn.Dense(self.features, name="dense")
        batch, in_dim = x_BxD.shape[0], x_BxD.shape[-1]
        direct_cost = batch * (in_dim * self.embedding_dim + self.embedding_dim * self.features)
        folded_cost = in_dim * self.embedding_dim * self.features + batch * in_dim * self.features
        if self.is_initializing() or direct_cost <= folded_cost:
            return dense(embedding(x_BxD))
        w_e, b_e = embedding.variables["params"]["kernel"], embedding.variables["params"]["bias"]
        w, b = dense.variables["params"]["kernel"], dense.variables["params"]["bias"]
        return x_BxD @ (w_e @ w) + (b_e @ w + b)


class MCVAE(nn.Module):
    """Keypoint embedding → encoder MLP → (mean, log-variance); decoder MLP on [z; e_y] → keypoints.

    The decoder mirrors ``hidden_dims`` (128-64-32 in, 32-64-128 out); the keypoint embedding is linear, as in the
    reference implementation.
    """

    num_keypoints: int
    num_categories: tuple[int, ...]
    num_numerical: int
    keypoint_embedding_dim: int = 203
    condition_embedding_dim: int = 11  # per condition
    hidden_dims: tuple[int, ...] = (128, 64, 32)
    latent_dim: int = 10
    activation: str = "relu"  # one of ACTIVATIONS
    numerical_missing: str = "indicator"  # see mcjax.conditions

    def setup(self):
        self.keypoint_embedding = EmbeddedDense(self.keypoint_embedding_dim, self.hidden_dims[0])
        self.encoder = MLP(tuple(self.hidden_dims[1:]), self.activation)
        self.to_posterior = nn.Dense(2 * self.latent_dim)  # mean and log-variance in one product
        self.condition_embedding = ConditionEmbedding(tuple(self.num_categories), self.num_numerical,
                                                      self.condition_embedding_dim, self.numerical_missing)
        self.decoder = MLP(tuple(reversed(self.hidden_dims)), self.activation)
        self.to_keypoints = nn.Dense(self.num_keypoints)

    def encode(self, x_BxD: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(z|x) without conditions: (mean, logvar), each [B, latent_dim]."""
        h = activation_fn(self.activation)(self.keypoint_embedding(x_BxD))
        mean, logvar = jnp.split(self.to_posterior(self.encoder(h)), 2, axis=-1)
        return mean, logvar

    def decode(self, z_BxL: jax.Array, conditions: Conditions) -> jax.Array:
        """p(x | [z; e_y]) mean, [B, num_keypoints]."""
        e_y = self.condition_embedding(conditions)
        return self.to_keypoints(self.decoder(jnp.concatenate([z_BxL, e_y], axis=-1)))

    def __call__(self, x_BxD: jax.Array, conditions: Conditions, eps_BxL: jax.Array):
        """Reconstruction through the reparameterised sample z = mean + sigma * eps (eps ~ N(0, I) drawn by the
        caller); returns (x_hat, (mean, logvar))."""
        mean, logvar = self.encode(x_BxD)
        z = mean + jnp.exp(0.5 * logvar) * eps_BxL
        return self.decode(z, conditions), (mean, logvar)


def kl_to_standard_normal(mean_BxL: jax.Array, logvar_BxL: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over latent dims, per row [B]."""
    return 0.5 * jnp.sum(jnp.exp(logvar_BxL) + mean_BxL**2 - 1.0 - logvar_BxL, axis=-1)


def model_from_config(model_config, spec, num_keypoints: int) -> MCVAE:
    """Builds the mcVAE of ``config.model`` for the conditions in ``spec`` (a ConditionSpec)."""
    return MCVAE(
        num_keypoints=num_keypoints,
        num_categories=spec.num_categories,
        num_numerical=len(spec.numerical_names),
        keypoint_embedding_dim=int(model_config.keypoint_embedding_dim),
        condition_embedding_dim=int(model_config.condition_embedding_dim),
        hidden_dims=tuple(int(h) for h in model_config.hidden_dims),
        latent_dim=int(model_config.latent_dim),
        activation=model_config.activation,
        numerical_missing=model_config.numerical_missing,
    )
