"""Layers shared by the models: width-masked dense layers, GroupNorm, activations and the Gaussian KL.

Width masking: one network built at the largest widths of a batch of runs, each run using only its own. A run's
units beyond its width start at zero and their outputs are multiplied by zero, so they get no gradient and,
under Adam or AdamW, stay zero: the active block follows exactly the trajectory of the narrow network started from the
same values (tested). The active block is initialised with the narrow layer's fan-in, so the starting distribution is
the narrow network's as well. Runs of different architectures thereby share one compiled, vmapped program.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mcjax.errors import InputError

ACTIVATIONS: dict[str, Callable] = {"relu": nn.relu, "selu": nn.selu, "silu": nn.silu, "gelu": nn.gelu,
                                    "tanh": jnp.tanh}


def activation_fn(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise InputError(f"Unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
    """``lax.conv_general_dilated``, except that a stride-1 NHWC convolution of a map smaller than its kernel runs as
    one matrix product of the map's patches (its kernel taps side by side) with the kernel: XLA:CPU takes 1.5 s for
    the gradients of a 3×3 convolution of a 2×2 map with 1,024 channels (batch 8), the product 46 ms — the bottleneck of
    the authors' U-Net on 32×32 latents. The same function (benchmarks/small_conv.py)."""
    channels_last = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    plain = (all(s == 1 for s in window_strides) and not any(d not in (None, 1) for d in (*(lhs_dilation or ()),
                                                                                           *(rhs_dilation or ())))
             and feature_group_count == 1 and lhs.ndim == 4 and dimension_numbers == channels_last)
    kh, kw = rhs.shape[:2]
    if not plain or (lhs.shape[1] >= kh and lhs.shape[2] >= kw):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision)
    pads = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding) if isinstance(padding, str) \
        else padding
    padded = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
    height, width = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
    patches = jnp.concatenate([padded[:, i:i + height, j:j + width] for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.einsum("bhwk,kd->bhwd", patches, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


def conv(features: int, kernel_size, **kwargs) -> nn.Conv:
    """``nn.Conv`` (same parameters and names) through ``conv_general_dilated``."""
    return nn.Conv(features, kernel_size, conv_general_dilated=conv_general_dilated, **kwargs)


def gaussian_kl(mean_q: jax.Array, logvar_q: jax.Array, mean_p=None, logvar_p=None) -> jax.Array:
    """KL(N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p))) per element, for diagonal Gaussians; the prior is
    N(0, I) when ``mean_p`` and ``logvar_p`` are None."""
    if mean_p is None:
        return 0.5 * (jnp.square(mean_q) + jnp.exp(logvar_q) - 1.0 - logvar_q)
    return 0.5 * (logvar_p - logvar_q + (jnp.exp(logvar_q) + jnp.square(mean_q - mean_p)) * jnp.exp(-logvar_p) - 1.0)


def kl_to_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example [B], summed over every other axis (latent dims, or latent
    positions and channels)."""
    kl = jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar
    return 0.5 * jnp.sum(kl, axis=tuple(range(1, kl.ndim)))


def width_mask(width, max_width: int) -> jax.Array:
    """[max_width] float32: 1 for the first ``width`` units (``width`` may be traced), 0 after."""
    return (jnp.arange(max_width) < width).astype(jnp.float32)


def masked_initializer(init, masks: dict[int, jax.Array], fan_in_axis: int):
    """``init`` drawn at the full shape, rescaled from the full to the active fan-in and zero outside the active
    block. ``masks`` maps an axis to its width mask; axes without one are fully active."""

    def wrapped(key, shape, dtype=jnp.float32):
        value = init(key, shape, dtype)
        if fan_in_axis in masks:
            value = value * jnp.sqrt(shape[fan_in_axis] / jnp.sum(masks[fan_in_axis]))
        for axis, mask in masks.items():
            value = value * jnp.expand_dims(mask, [a for a in range(len(shape)) if a != axis % len(shape)])
        return value.astype(dtype)

    return wrapped


class MaskedDense(nn.Module):
    """``nn.Dense`` (same parameters and initialisation) whose input and output units may be width-masked."""

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x, in_mask: jax.Array | None = None, out_mask: jax.Array | None = None):
        masks = {a: m for a, m in ((0, in_mask), (1, out_mask)) if m is not None}
        kernel = self.param("kernel", masked_initializer(self.kernel_init, masks, fan_in_axis=0),
                            (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = x @ kernel + bias
        return y if out_mask is None else y * out_mask


class GroupNorm(nn.Module):
    """``flax.linen.GroupNorm`` with the same parameters and maths (statistics E[x] and E[x²] − E[x]² in float32),
    computed in an order XLA:CPU runs several times faster; the output has ``dtype`` (None: the input's).

    The sums run over H and W per channel first ([B, C], channels kept in the fast axis), and a 0/1 same-group matrix
    product turns them into per-channel group means, so the normalisation pass broadcasts plain [B, C] coefficients;
    reducing over the group axes of [B, H, W, G, C/G] and broadcasting back from [B, G] both recompute group indices
    element by element. The product runs at HIGHEST precision, so GPUs do not round the sums to TF32.
    """

    num_groups: int
    epsilon: float = 1e-6
    dtype: Any = None

    @nn.compact
    def __call__(self, x_BxHxWxC):
        c = x_BxHxWxC.shape[-1]
        x = x_BxHxWxC.astype(jnp.float32)
        spatial = tuple(range(1, x.ndim - 1))
        group_C = np.arange(c) // (c // self.num_groups)
        same_group_CxC = jnp.asarray(group_C[:, None] == group_C[None, :], jnp.float32)
        count = math.prod(x.shape[1:-1]) * (c // self.num_groups)

        def group_mean(sums_BxC):
            return jnp.dot(sums_BxC, same_group_CxC, precision=jax.lax.Precision.HIGHEST) / count

        mean_BxC = group_mean(jnp.sum(x, spatial))
        var_BxC = jnp.maximum(0.0, group_mean(jnp.sum(jnp.square(x), spatial)) - jnp.square(mean_BxC))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        mul_BxC = jax.lax.rsqrt(var_BxC + self.epsilon) * scale
        per_channel = (x.shape[0],) + (1,) * len(spatial) + (c,)
        y = (x - mean_BxC.reshape(per_channel)) * mul_BxC.reshape(per_channel) + bias
        return y.astype(self.dtype or x_BxHxWxC.dtype)
