"""The authors' mcLDM U-Net (``mcUnet`` in the authors' code), rebuilt in Flax: ``model.layout = "reference"``.

The paper trained this network (115,763,732 parameters besides the condition embedding for GeoBiked's eight
conditions at 64 start channels, 4 levels, 4 ResBlocks per level); ``mcjax.models.unet.ConditionalUNet`` is mcjax's
own, smaller layout. What makes this one the authors' (each changes the function or the parameter count):

- channels double at every level: level i works at ``base · 2^i`` channels and ends with a strided 3×3 convolution
  (padded by one on every side, as PyTorch pads) that halves the resolution and doubles the channels, so the
  bottleneck (ResBlock, attention, ResBlock) works at ``base · 2^L``; inputs must be divisible by 2^L;
- per level, e_y → Linear(K · d → condition_channels) → BatchNorm, broadcast and concatenated once, before the level's
  first ResBlock; the up level concatenates [h, skip] first and then the condition;
- skips: each down level's output before its downsampling, and the bottleneck's input; the deepest up level takes
  the bottleneck input, each next one the skip one level deeper, so level 0's full-resolution features are never
  used again (as in the authors' code);
- up level i: ResBlocks from ``base · 2^(i+2)`` (+ condition) channels to ``base · 2^i``, attention, then nearest ×2
  upsampling + 3×3 convolution (the last level too); the output is a plain 3×3 convolution;
- ResBlocks: GroupNorm (ε 1e-6) with the authors' group count (``authors_group_count``), the time embedding added
  after the first convolution without an activation;
- attention, appended after a level's ResBlocks: GroupNorm (ε 1e-5), 1×1 q/k/v projection, output projection started
  at zero, residual. The authors reshape the channel-major [B, 3·heads·d, H·W] projection to [B, heads, H·W, 3·d]
  without transposing, so a head's "token" is a run of 3·d consecutive values of that array, not one position's
  features; reproduced, because it is the function the paper trained;
- time: sinusoidal features of ``time_embedding_dim / 2`` (sin and cos interleaved) → Dense → SiLU → Dense.

Deliberately not reproduced: attention dropout at sampling time (the authors' code leaves it on; here dropout acts
in training only) and PyTorch's initialisers (flax's defaults here, besides the zero-started attention output).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcjax.conditions import Conditions, all_missing
from mcjax.errors import InputError
from mcjax.models.embedding import ConditionEmbedding
from mcjax.models.layers import activation_fn, conv
from mcjax.models.unet import (
    ConditionInjection,
    ResBlock,
    SelfAttention,
    group_norm,
    head_major_attention,
    timestep_angles,
    upsample,
)


def authors_group_count(channels: int, groups: int = 32) -> int:
    """GroupNorm's group count in the authors' code: ``groups`` if it divides C, else the largest divisor of C below
    min(C / 2, groups) (74 channels → 2 groups, 138 → 23), and C itself when C < groups."""
    if channels < groups:
        return channels
    if channels % groups == 0:
        return groups
    return next(g for g in range(min(channels // 2, groups) - 1, 0, -1) if channels % g == 0)


def sinusoidal_features(t_B: jax.Array, dim: int) -> jax.Array:
    """[B, dim]: sin and cos of t at geometric frequencies, interleaved (sin at even, cos at odd positions)."""
    angles = timestep_angles(t_B, dim)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(angles.shape[0], -1)


class ChannelMajorAttention(SelfAttention):
    """The authors' spatial self-attention (see the module docstring for its head layout), residual; the fields of
    mcjax's ``SelfAttention``."""

    @nn.compact
    def __call__(self, h_BxHxWxC, train: bool):
        b, height, width, c = h_BxHxWxC.shape
        n, inner = height * width, self.num_heads * self.head_dim
        tokens = group_norm(c, authors_group_count, epsilon=1e-5)(h_BxHxWxC).reshape(b, n, c)
        qkv = nn.Dense(3 * inner, dtype=self.dtype, name="qkv")(tokens)
        qkv = jnp.swapaxes(qkv, 1, 2).reshape(b, self.num_heads, n, 3 * self.head_dim)
        q, k, v = (jnp.swapaxes(a, 1, 2) for a in jnp.split(qkv, 3, axis=-1))  # [B, N, heads, d]
        dropout_rng = self.make_rng("dropout") if train and self.dropout > 0 else None
        attended = head_major_attention(q, k, v, dropout_rng=dropout_rng, dropout_rate=self.dropout,
                                        broadcast_dropout=False, deterministic=not train)
        attended = jnp.swapaxes(jnp.swapaxes(attended, 1, 2).reshape(b, inner, n), 1, 2)
        out = nn.Dense(c, dtype=self.dtype, kernel_init=nn.initializers.zeros_init(), name="proj_out")(attended)
        return (h_BxHxWxC + out.reshape(b, height, width, c)).astype(self.dtype)


def authors_res_block(channels: int, activation: str, dropout: float, dtype, name: str) -> ResBlock:
    """The authors' ResBlock: their group count, the time embedding added without an activation."""
    return ResBlock(channels, activation_fn(activation), dropout, dtype, authors_group_count, activate_time=False,
                    zero_init_output=False, name=name)


class ReferenceLevel(nn.Module):
    """One level of either path: condition → ResBlocks (→ attention), then the strided convolution (down) or the
    upsampling (up). A down level also returns its features before downsampling: the skip."""

    channels: int  # the ResBlocks' width; a down level's strided convolution doubles it
    blocks: int
    attention: bool
    down: bool
    condition_channels: int
    num_heads: int
    head_dim: int
    dropout: float
    activation: str
    dtype: Any

    @nn.compact
    def __call__(self, h, e_y, temb, train: bool):
        h = ConditionInjection(self.condition_channels, name="condition")(h, e_y, train)
        for i in range(self.blocks):
            h = authors_res_block(self.channels, self.activation, self.dropout, self.dtype, f"res_{i}")(h, temb, train)
        if self.attention:
            h = ChannelMajorAttention(self.num_heads, self.head_dim, self.dropout, self.dtype, name="attention")(
                h, train)
        if not self.down:
            return upsample(h, self.dtype)
        return conv(2 * self.channels, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    name="downsample")(h), h


class ReferenceUNet(nn.Module):
    """ε-prediction U-Net ``(x_t [B, H, W, C], t [B], conditions | None) → ε̂ [B, H, W, C]`` in the authors' layout.

    ``levels`` resolution levels of ``base_channels · 2^i`` channels with ``blocks_per_level`` ResBlocks each;
    ``attention_levels`` (0-based) add attention on both paths. ``conditions=None`` is the unconditional prediction,
    identical to passing every condition masked.
    """

    num_categories: tuple[int, ...]
    num_numerical: int
    out_channels: int = 4
    base_channels: int = 64
    levels: int = 4
    blocks_per_level: int = 4
    attention_levels: tuple[int, ...] = (1, 2, 3)
    num_heads: int = 8
    head_dim: int = 64
    dropout: float = 0.05  # ResBlocks and attention, training only
    activation: str = "selu"
    time_embedding_dim: int = 128  # the MLP's width; its sinusoidal input has half as many features
    condition_embedding_dim: int = 10  # per condition (ConditionEmbedding)
    condition_channels: int = 10  # the authors map e_y to condition_embedding_dim channels
    numerical_missing: str = "paper"  # see mcjax.models.embedding
    dtype: Any = jnp.float32  # compute dtype; parameters and normalisation stay float32

    @nn.compact
    def __call__(self, x_BxHxWxC, t_B, conditions: Conditions | None = None, train: bool = False):
        if x_BxHxWxC.shape[1] % 2 ** self.levels or x_BxHxWxC.shape[2] % 2 ** self.levels:
            raise InputError(f"Input {x_BxHxWxC.shape[1:3]} is not divisible by 2^{self.levels} for "
                             f"{self.levels} levels.")
        if any(not 0 <= level < self.levels for level in self.attention_levels):
            raise InputError(f"attention_levels {self.attention_levels} must lie in [0, {self.levels}).")
        if conditions is None:
            conditions = all_missing(self.num_categories, self.num_numerical, x_BxHxWxC.shape[0])
        e_y = ConditionEmbedding(self.num_categories, self.num_numerical, self.condition_embedding_dim,
                                 self.numerical_missing)(conditions)
        temb = nn.Dense(self.time_embedding_dim, name="time_0")(
            sinusoidal_features(t_B, self.time_embedding_dim // 2))
        temb = nn.Dense(self.time_embedding_dim, name="time_1")(nn.silu(temb))

        def level(i, down):
            return ReferenceLevel(self.base_channels * 2 ** i, self.blocks_per_level, i in self.attention_levels,
                                  down, self.condition_channels, self.num_heads, self.head_dim, self.dropout,
                                  self.activation, self.dtype, name=f"{'down' if down else 'up'}_{i}")

        h = conv(self.base_channels, (3, 3), dtype=self.dtype, name="stem")(x_BxHxWxC)
        skips = []
        for i in range(self.levels):
            h, before_downsampling = level(i, down=True)(h, e_y, temb, train)
            skips.append(before_downsampling)
        skips.append(h)
        middle = self.base_channels * 2 ** self.levels
        h = authors_res_block(middle, self.activation, self.dropout, self.dtype, "middle_0")(h, temb, train)
        h = ChannelMajorAttention(self.num_heads, self.head_dim, self.dropout, self.dtype, name="middle_attention")(
            h, train)
        h = authors_res_block(middle, self.activation, self.dropout, self.dtype, "middle_1")(h, temb, train)
        for i in reversed(range(self.levels)):
            h = level(i, down=False)(jnp.concatenate([h, skips.pop()], axis=-1), e_y, temb, train)
        return conv(self.out_channels, (3, 3), dtype=self.dtype, name="head")(h).astype(jnp.float32)
