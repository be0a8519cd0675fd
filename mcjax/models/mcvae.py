"""mcVAE: a VAE whose decoder sees [z; e_y] while the encoder q(z|x) sees the keypoints only.

Because the encoder is unconditioned, the KL term acts on z alone and the conditions reach the output only through
the decoder — which is what lets any subset of conditions steer generation from the prior.

The prior is N(0, I) as in the paper (``prior="standard"``), or learned from the masked conditions
(``prior="conditional"``): p(z | masked y) = N(mu(e_y), diag sigma²(e_y)), a prior network as in VAEAC (Ivanov et al.
2019). With a fixed prior, z can carry everything the conditions say, and the decoder then relies on z or on e_y
depending on beta: a regressor that ignores z, or a generator that ignores its conditions. A conditional prior lets
z carry only what the given conditions leave open, and generation draws z from the region those conditions select.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcjax.conditions import Conditions
from mcjax.errors import InputError
from mcjax.models.embedding import ConditionEmbedding
from mcjax.models.layers import MaskedDense, activation_fn, width_mask

PRIORS = ("standard", "conditional")


class Widths(NamedTuple):
    """A run's own widths inside an mcVAE built at larger ones (int32 scalars; stacked along axis 0 for runs)."""

    keypoint_embedding: jax.Array
    condition_embedding: jax.Array  # per condition
    hidden: tuple[jax.Array, ...]  # encoder widths; the decoder mirrors them
    latent: jax.Array


class MLP(nn.Module):
    """Dense layers with an activation after each (the output layer is added by the caller); ``masks`` (one per
    layer, see ``mcjax.models.layers``) narrow them for one run, ``in_mask`` is the mask of the input."""

    widths: tuple[int, ...]
    activation: str = "relu"

    @nn.compact
    def __call__(self, h, in_mask=None, masks=None):
        act = activation_fn(self.activation)
        masks = masks or (None,) * len(self.widths)
        for i, (width, mask) in enumerate(zip(self.widths, masks)):
            h = act(MaskedDense(width, name=f"layer_{i}")(h, in_mask, mask))
            in_mask = mask
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
    def __call__(self, x_BxD, embedding_mask=None, out_mask=None):
        embedding = MaskedDense(self.embedding_dim, name="embedding")
        dense = MaskedDense(self.features, name="dense")
        batch, in_dim = x_BxD.shape[0], x_BxD.shape[-1]
        direct_cost = batch * (in_dim * self.embedding_dim + self.embedding_dim * self.features)
        folded_cost = in_dim * self.embedding_dim * self.features + batch * in_dim * self.features
        if self.is_initializing() or direct_cost <= folded_cost:
            return dense(embedding(x_BxD, out_mask=embedding_mask), embedding_mask, out_mask)
        w_e, b_e = embedding.variables["params"]["kernel"], embedding.variables["params"]["bias"]
        w, b = dense.variables["params"]["kernel"], dense.variables["params"]["bias"]
        if embedding_mask is not None:
            w_e, b_e = w_e * embedding_mask, b_e * embedding_mask
        y = x_BxD @ (w_e @ w) + (b_e @ w + b)
        return y if out_mask is None else y * out_mask


class _Masks(NamedTuple):
    keypoint_embedding: jax.Array
    condition_embedding: jax.Array
    hidden: tuple[jax.Array, ...]
    latent: jax.Array


class MCVAE(nn.Module):
    """Keypoint embedding → encoder MLP → (mean, log-variance); decoder MLP on [z; e_y] → keypoints.

    The decoder mirrors ``hidden_dims`` (128-64-32 in, 32-64-128 out); the keypoint embedding is linear, as in the
    reference implementation. The sizes are maxima when ``widths`` (``Widths``) narrow the network for a run.
    """

    num_keypoints: int
    num_categories: tuple[int, ...]
    num_numerical: int
    keypoint_embedding_dim: int = 203
    condition_embedding_dim: int = 11  # per condition
    hidden_dims: tuple[int, ...] = (128, 64, 32)
    latent_dim: int = 10
    activation: str = "relu"  # one of mcjax.models.layers.ACTIVATIONS
    numerical_missing: str = "indicator"  # see mcjax.models.embedding
    prior: str = "standard"  # standard: N(0, I), the paper | conditional: p(z | masked y), see the module docstring
    prior_hidden_dims: tuple[int, ...] = (64,)  # the conditional prior's network

    def setup(self):
        if self.prior not in PRIORS:
            raise InputError(f"Unknown mcVAE prior {self.prior!r}; choose from {PRIORS}.")
        if self.prior == "conditional":
            self.prior_network = MLP(tuple(self.prior_hidden_dims), self.activation)
            # Zero-initialised: training starts from the paper's N(0, I).
            self.to_prior = MaskedDense(2 * self.latent_dim, kernel_init=nn.initializers.zeros_init())
        self.keypoint_embedding = EmbeddedDense(self.keypoint_embedding_dim, self.hidden_dims[0])
        self.encoder = MLP(tuple(self.hidden_dims[1:]), self.activation)
        self.to_posterior = MaskedDense(2 * self.latent_dim)  # mean and log-variance in one product
        self.condition_embedding = ConditionEmbedding(tuple(self.num_categories), self.num_numerical,
                                                      self.condition_embedding_dim, self.numerical_missing)
        self.decoder = MLP(tuple(reversed(self.hidden_dims)), self.activation)
        self.to_keypoints = MaskedDense(self.num_keypoints)

    def _masks(self, widths: Widths | None) -> _Masks:
        if widths is None:
            return _Masks(None, None, (None,) * len(self.hidden_dims), None)
        return _Masks(width_mask(widths.keypoint_embedding, self.keypoint_embedding_dim),
                      width_mask(widths.condition_embedding, self.condition_embedding_dim),
                      tuple(width_mask(w, d) for w, d in zip(widths.hidden, self.hidden_dims)),
                      width_mask(widths.latent, self.latent_dim))

    def encode(self, x_BxD: jax.Array, widths: Widths | None = None) -> tuple[jax.Array, jax.Array]:
        """q(z|x) without conditions: (mean, logvar), each [B, latent_dim] (0 beyond a run's latent width)."""
        m = self._masks(widths)
        h = activation_fn(self.activation)(self.keypoint_embedding(x_BxD, m.keypoint_embedding, m.hidden[0]))
        h = self.encoder(h, m.hidden[0], m.hidden[1:])
        latent_mask = None if m.latent is None else jnp.tile(m.latent, 2)
        mean, logvar = jnp.split(self.to_posterior(h, m.hidden[-1], latent_mask), 2, axis=-1)
        return mean, logvar

    def _condition_mask(self, m: _Masks) -> jax.Array | None:
        """The width mask of e_y (every condition's embedding narrowed alike)."""
        num_conditions = len(self.num_categories) + self.num_numerical
        return None if m.condition_embedding is None else jnp.tile(m.condition_embedding, num_conditions)

    def _prior(self, e_y, m: _Masks) -> tuple[jax.Array, jax.Array] | None:
        """(mean, logvar) of p(z | masked y), or None for the standard prior."""
        if self.prior == "standard":
            return None
        h = self.prior_network(e_y, self._condition_mask(m))
        latent_mask = None if m.latent is None else jnp.tile(m.latent, 2)
        mean, logvar = jnp.split(self.to_prior(h, None, latent_mask), 2, axis=-1)
        return mean, logvar

    def _decode(self, z_BxL: jax.Array, e_y, m: _Masks) -> jax.Array:
        h = jnp.concatenate([z_BxL, e_y], axis=-1)
        in_mask = None
        if m.latent is not None:
            in_mask = jnp.concatenate([m.latent, self._condition_mask(m)])
            h = h * in_mask
        h = self.decoder(h, in_mask, tuple(reversed(m.hidden)))
        return self.to_keypoints(h, m.hidden[0])

    def decode(self, z_BxL: jax.Array, conditions: Conditions, widths: Widths | None = None) -> jax.Array:
        """p(x | [z; e_y]) mean, [B, num_keypoints]."""
        m = self._masks(widths)
        return self._decode(z_BxL, self.condition_embedding(conditions, m.condition_embedding), m)

    def generate(self, eps_BxL: jax.Array, conditions: Conditions, widths: Widths | None = None,
                 temperature: float = 1.0) -> jax.Array:
        """Designs from the prior given the (masked) conditions: z = mean + temperature · sigma · eps, decoded."""
        m = self._masks(widths)
        e_y = self.condition_embedding(conditions, m.condition_embedding)
        prior = self._prior(e_y, m)
        z = temperature * eps_BxL if prior is None else prior[0] + temperature * jnp.exp(0.5 * prior[1]) * eps_BxL
        return self._decode(z, e_y, m)

    def __call__(self, x_BxD: jax.Array, conditions: Conditions, eps_BxL: jax.Array, widths: Widths | None = None):
        """Reconstruction through the reparameterised sample z = mean + sigma * eps (eps ~ N(0, I) drawn by the
        caller); returns (x_hat, (mean, logvar), prior) with prior = (mean, logvar) of p(z | masked y), or None for
        the standard prior."""
        m = self._masks(widths)
        mean, logvar = self.encode(x_BxD, widths)
        z = mean + jnp.exp(0.5 * logvar) * eps_BxL
        e_y = self.condition_embedding(conditions, m.condition_embedding)
        return self._decode(z, e_y, m), (mean, logvar), self._prior(e_y, m)


def latent_noise(key: jax.Array, shape: tuple[int, ...], latent_dim: int) -> jax.Array:
    """N(0, 1) draws of shape ``shape + (latent_dim,)`` in which latent dim l depends on (key, l) alone, so a run of
    latent width w sees the same draws in a network of any larger width."""
    per_dim = jax.vmap(lambda d: jax.random.normal(jax.random.fold_in(key, d), shape))(jnp.arange(latent_dim))
    return jnp.moveaxis(per_dim, 0, -1)


def mcvae_from_config(model_config, spec, num_keypoints: int) -> MCVAE:
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
        prior=model_config.get("prior", "standard"),  # configs of older runs have no prior: the paper's
        prior_hidden_dims=tuple(int(h) for h in model_config.get("prior_hidden_dims", (64,))),
    )
