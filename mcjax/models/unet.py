"""The mcLDM denoiser: a U-Net without cross-attention whose conditions enter at every resolution level.

As in the paper, the condition vector e_y (``mcjax.models.embedding.ConditionEmbedding`` of the masked conditions)
goes, at each level of the down and of the up path, through a linear layer and batch norm, is broadcast over the
feature map and concatenated with the features entering that level's first ResBlock. "Unconditional" is the same
network with every condition masked — there is no separate path, so classifier-free guidance needs no extra training.

NHWC throughout; nearest-neighbour upsampling + convolution (no transposed convolutions); attention dropout is only
active in training (the reference leaves it on at sampling time).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcjax.conditions import Conditions, all_missing
from mcjax.errors import InputError
from mcjax.models.embedding import ConditionEmbedding
from mcjax.models.layers import GroupNorm, activation_fn, conv


def timestep_angles(t_B: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """[B, dim // 2]: t times the geometric frequencies max_period^(-2i/dim) of sinusoidal position features."""
    half = dim // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    return jnp.asarray(t_B, jnp.float32)[:, None] * frequencies[None]


def timestep_embedding(t_B: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding of (integer or real) timesteps, [B, dim]: cos and sin of t at geometric frequencies."""
    angles = timestep_angles(t_B, dim)
    embedding = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
    return jnp.pad(embedding, ((0, 0), (0, dim - 2 * angles.shape[-1])))


def gcd_groups(channels: int) -> int:
    """GroupNorm's group count in mcjax's layout: gcd(32, C)."""
    return math.gcd(32, channels)


def group_norm(channels: int, groups: Callable[[int], int] = gcd_groups, epsilon: float = 1e-6) -> GroupNorm:
    """Normalisation statistics and output in float32 whatever the compute dtype."""
    return GroupNorm(num_groups=groups(channels), epsilon=epsilon, dtype=jnp.float32)


def head_major_attention(query, key, value, dropout_rng=None, dropout_rate: float = 0.0,
                         broadcast_dropout: bool = True, deterministic: bool = False, dtype=None, precision=None):
    """``flax.linen.dot_product_attention`` (q, k, v and output [B, N, heads, head_dim]), computed in the order
    XLA:CPU runs fastest; the same function, with the same dropout mask drawn from the same key in training.

    q, k and v are transposed once to [B, heads, N, head_dim]: with flax's layout the product of the weights and
    the values has a transposed output, which XLA:CPU computes ~4× slower. The softmax denominator and dropout's
    1/keep_prob divide the [B, heads, N, head_dim] output instead of the N × N weights:
    softmax(s) v = (exp(s − max s) v) / Σ exp(s − max s), one pass less over the weights.
    """
    query, key, value = (jnp.swapaxes(a if dtype is None else a.astype(dtype), -3, -2) for a in (query, key, value))
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    logits = jnp.einsum("...hqd,...hkd->...hqk", query, key, precision=precision)
    weights = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    denominator = jnp.sum(weights, axis=-1, keepdims=True)
    if not deterministic and dropout_rate > 0.0:
        keep_prob = 1.0 - dropout_rate
        shape = ((1,) * (logits.ndim - 2) if broadcast_dropout else logits.shape[:-2]) + logits.shape[-2:]
        keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)  # as flax draws it
        weights = jnp.where(keep, weights, jnp.zeros((), weights.dtype))
        denominator = denominator * jnp.asarray(keep_prob, denominator.dtype)
    out = jnp.einsum("...hqk,...hkd->...hqd", weights, value, precision=precision) / denominator
    return jnp.swapaxes(out, -3, -2)


class ResBlock(nn.Module):
    """GroupNorm → act → 3×3 conv, plus the time embedding, → GroupNorm → act → dropout → 3×3 conv, residual.

    mcjax's layout passes the time embedding through the activation first and starts the last convolution at zero
    (the block starts as the identity); the authors' layout does neither and counts groups its own way.
    """

    channels: int
    activation: Callable
    dropout: float
    dtype: Any = jnp.float32
    groups: Callable[[int], int] = gcd_groups
    activate_time: bool = True
    zero_init_output: bool = True

    @nn.compact
    def __call__(self, h_BxHxWxC, temb_BxT, train: bool):
        h = conv(self.channels, (3, 3), dtype=self.dtype)(
            self.activation(group_norm(h_BxHxWxC.shape[-1], self.groups)(h_BxHxWxC)))
        temb = self.activation(temb_BxT) if self.activate_time else temb_BxT
        h = h + nn.Dense(self.channels, dtype=self.dtype)(temb)[:, None, None, :]
        h = self.activation(group_norm(self.channels, self.groups)(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        output_init = nn.initializers.zeros_init() if self.zero_init_output else nn.initializers.lecun_normal()
        h = conv(self.channels, (3, 3), dtype=self.dtype, kernel_init=output_init)(h)
        skip = h_BxHxWxC if h_BxHxWxC.shape[-1] == self.channels else \
            conv(self.channels, (1, 1), dtype=self.dtype)(h_BxHxWxC)
        return (skip + h).astype(self.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H×W positions (no cross-attention), residual."""

    num_heads: int
    head_dim: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BxHxWxC, train: bool):
        b, height, width, c = h_BxHxWxC.shape
        tokens = group_norm(c)(h_BxHxWxC).reshape(b, height * width, c)
        attended = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim, out_features=c,
            dropout_rate=self.dropout, deterministic=not train, dtype=self.dtype,
            attention_fn=head_major_attention)(tokens, tokens)
        return (h_BxHxWxC + attended.reshape(b, height, width, c)).astype(self.dtype)


class ConditionInjection(nn.Module):
    """e_y → linear → batch norm → broadcast over the feature map → concatenated to it."""

    features: int

    @nn.compact
    def __call__(self, h_BxHxWxC, e_y_BxE, train: bool):
        c = nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Dense(self.features)(e_y_BxE))
        b, height, width, _ = h_BxHxWxC.shape
        c = jnp.broadcast_to(c[:, None, None, :], (b, height, width, self.features)).astype(h_BxHxWxC.dtype)
        return jnp.concatenate([h_BxHxWxC, c], axis=-1)


def upsample(h_BxHxWxC, dtype):
    """Nearest-neighbour ×2, then a 3×3 convolution (no transposed convolutions: slow in XLA). Call it inside a
    compact method: the convolution becomes a submodule of the caller."""
    b, height, width, c = h_BxHxWxC.shape
    h = jax.image.resize(h_BxHxWxC, (b, 2 * height, 2 * width, c), "nearest")
    return conv(c, (3, 3), dtype=dtype)(h)


class ConditionalUNet(nn.Module):
    """ε-prediction U-Net: ``(x_t [B, H, W, C], t [B], conditions | None) → ε̂ [B, H, W, C]``.

    Level i has ``base_channels · channel_multipliers[i]`` channels and ``blocks_per_level`` ResBlocks (one more on
    the way up, which also takes the skip of the downsampling); levels in ``attention_levels`` (0-based) add
    self-attention after each ResBlock. H and W must be divisible by 2^(levels - 1). ``conditions=None`` is the
    unconditional prediction, identical to passing every condition masked.
    """

    num_categories: tuple[int, ...]
    num_numerical: int
    out_channels: int = 4
    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)  # one per resolution level
    blocks_per_level: int = 2
    attention_levels: tuple[int, ...] = (1, 2, 3)
    num_heads: int = 8
    head_dim: int = 64
    dropout: float = 0.05  # ResBlocks and attention, training only
    activation: str = "selu"  # selu (reference) | silu | any of mcjax.models.layers.ACTIVATIONS
    time_embedding_dim: int = 128
    condition_embedding_dim: int = 10  # per condition (ConditionEmbedding)
    condition_channels: int = 32  # channels the projected e_y adds at each level
    numerical_missing: str = "indicator"  # see mcjax.models.embedding
    dtype: Any = jnp.float32  # compute dtype (bfloat16 on accelerators); parameters and normalisation stay float32

    @nn.compact
    def __call__(self, x_BxHxWxC, t_B, conditions: Conditions | None = None, train: bool = False):
        levels = len(self.channel_multipliers)
        if x_BxHxWxC.shape[1] % 2 ** (levels - 1) or x_BxHxWxC.shape[2] % 2 ** (levels - 1):
            raise InputError(f"Input {x_BxHxWxC.shape[1:3]} is not divisible by 2^{levels - 1} for {levels} levels.")
        if any(not 0 <= level < levels for level in self.attention_levels):
            raise InputError(f"attention_levels {self.attention_levels} must lie in [0, {levels}).")
        act = activation_fn(self.activation)
        batch = x_BxHxWxC.shape[0]
        if conditions is None:
            conditions = all_missing(self.num_categories, self.num_numerical, batch)
        e_y = ConditionEmbedding(self.num_categories, self.num_numerical, self.condition_embedding_dim,
                                 self.numerical_missing)(conditions)
        temb = nn.Dense(4 * self.time_embedding_dim)(timestep_embedding(t_B, self.time_embedding_dim))
        temb = nn.Dense(4 * self.time_embedding_dim)(act(temb))

        def blocks(h, channels, level):
            h = ResBlock(channels, act, self.dropout, self.dtype)(h, temb, train)
            if level in self.attention_levels:
                h = SelfAttention(self.num_heads, self.head_dim, self.dropout, self.dtype)(h, train)
            return h

        h = conv(self.base_channels, (3, 3), dtype=self.dtype)(x_BxHxWxC)
        skips = [h]
        for level, multiplier in enumerate(self.channel_multipliers):
            h = ConditionInjection(self.condition_channels, name=f"down_condition_{level}")(h, e_y, train)
            for _ in range(self.blocks_per_level):
                h = blocks(h, self.base_channels * multiplier, level)
                skips.append(h)
            if level < levels - 1:
                h = conv(h.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype)(h)
                skips.append(h)
        channels = self.base_channels * self.channel_multipliers[-1]
        h = ResBlock(channels, act, self.dropout, self.dtype)(h, temb, train)
        h = SelfAttention(self.num_heads, self.head_dim, self.dropout, self.dtype)(h, train)
        h = ResBlock(channels, act, self.dropout, self.dtype)(h, temb, train)
        for level in reversed(range(levels)):
            h = ConditionInjection(self.condition_channels, name=f"up_condition_{level}")(h, e_y, train)
            for _ in range(self.blocks_per_level + 1):
                h = blocks(jnp.concatenate([h, skips.pop()], axis=-1), self.base_channels *
                           self.channel_multipliers[level], level)
            if level > 0:
                h = upsample(h, self.dtype)
        h = act(group_norm(h.shape[-1])(h))
        return conv(self.out_channels, (3, 3), dtype=self.dtype)(h).astype(jnp.float32)
