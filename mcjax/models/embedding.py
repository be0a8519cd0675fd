"""The condition embedding e_y: masked conditions → one vector per example (the paper's ConditionEmbedding)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcjax.conditions import NUMERICAL_MISSING_MODES, Conditions
from mcjax.errors import InputError
from mcjax.models.layers import MaskedDense, masked_initializer

_PLACEHOLDER = {"indicator": 0.0, "paper": -1.0, "reference": 0.0}


def numerical_inputs(num_BxJ: jax.Array, missing: str) -> jax.Array:
    """Per-condition inputs to the numerical linear layers, [B, J, F] (F = 2 with an indicator, else 1)."""
    if missing not in _PLACEHOLDER:
        raise InputError(f"Unknown numerical missing mode {missing!r}; choose from {NUMERICAL_MISSING_MODES}.")
    is_missing = jnp.isnan(num_BxJ)
    value = jnp.where(is_missing, _PLACEHOLDER[missing], num_BxJ)[..., None]
    if missing == "indicator":
        return jnp.concatenate([value, is_missing[..., None].astype(value.dtype)], axis=-1)
    return value


class ConditionEmbedding(nn.Module):
    """e_y: one embedding table (n_i + 1 rows, row 0 = missing) per categorical condition and one linear layer per
    numerical condition, concatenated to [B, (K + J) * embedding_dim].

    The lookups run as one multi-hot matrix product against the block-diagonal stack of the tables: the same result
    as K gathers, but its gradient is a matrix product too instead of K scatter-adds, which are slow on CPUs.
    ``width_mask`` ([embedding_dim], see ``mcjax.models.layers``) narrows every condition's embedding for one run.
    """

    num_categories: tuple[int, ...]
    num_numerical: int
    embedding_dim: int
    numerical_missing: str = "indicator"  # one of NUMERICAL_MISSING_MODES

    @nn.compact
    def __call__(self, conditions: Conditions, width_mask: jax.Array | None = None) -> jax.Array:
        masks = {} if width_mask is None else {1: width_mask}
        parts = []
        if self.num_categories:
            init = masked_initializer(nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0), masks,
                                      fan_in_axis=1)
            tables = [self.param(f"categorical_{i}", init, (n + 1, self.embedding_dim))
                      for i, n in enumerate(self.num_categories)]
            multi_hot_BxT = jnp.concatenate([jax.nn.one_hot(conditions.cat_BxK[:, i], n + 1, dtype=tables[0].dtype)
                                             for i, n in enumerate(self.num_categories)], axis=-1)
            parts.append(multi_hot_BxT @ jax.scipy.linalg.block_diag(*tables))
        if self.num_numerical:
            x_BxJxF = numerical_inputs(conditions.num_BxJ, self.numerical_missing)
            parts += [MaskedDense(self.embedding_dim, name=f"numerical_{j}")(x_BxJxF[:, j], out_mask=width_mask)
                      for j in range(self.num_numerical)]
        e_y = jnp.concatenate(parts, axis=-1)
        if width_mask is None:
            return e_y
        return e_y * jnp.tile(width_mask, len(self.num_categories) + self.num_numerical)
