"""Width-masked layers: one network built at the largest widths of a batch of runs, each run using only its own.

A run's units beyond its width start at zero and their outputs are multiplied by zero, so they get no gradient and,
under Adam or AdamW, stay zero: the active block follows exactly the trajectory of the narrow network started from the
same values (tested). The active block is initialised with the narrow layer's fan-in, so the starting distribution is
the narrow network's as well. Runs of different architectures thereby share one compiled, vmapped program.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


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

    @nn.compact
    def __call__(self, x, in_mask: jax.Array | None = None, out_mask: jax.Array | None = None):
        masks = {a: m for a, m in ((0, in_mask), (1, out_mask)) if m is not None}
        kernel = self.param("kernel", masked_initializer(nn.initializers.lecun_normal(), masks, fan_in_axis=0),
                            (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = x @ kernel + bias
        return y if out_mask is None else y * out_mask
