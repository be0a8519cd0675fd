"""Mixed categorical/numerical conditions: specification, masking and embedding.

Masking happens *before* embedding (the paper's "masked conditioning"): a masked categorical condition becomes its
reserved "missing" index, a masked numerical condition becomes a placeholder value. Index 0 of every categorical
condition is "missing"; observed categories are 1..n_i, so one comparison masks every condition at once.

Numerical missing values (``NumericalMissing``):
- ``indicator`` (default): the value is replaced by 0 and a separate 0/1 "missing" input goes into the condition's
  linear layer, so no real value can be mistaken for "missing".
- ``paper``: the value is replaced by -1 (unambiguous because values are min-max scaled to [0, 1]).
- ``reference``: the value is replaced by 0, as the paper's reference code does in practice.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mcjax.masked import MaskedDense, masked_initializer

MISSING_INDEX = 0
NUMERICAL_MISSING_MODES = ("indicator", "paper", "reference")
MASKING_MODES = ("per_condition", "all_at_once")
_PLACEHOLDER = {"indicator": 0.0, "paper": -1.0, "reference": 0.0}


class Conditions(NamedTuple):
    """A batch of encoded conditions (a pytree, so it flows through jit/vmap/scan).

    cat_BxK: int32, 0 = missing, 1..n_i = observed category.
    num_BxJ: float32 scaled values; NaN = missing.
    """

    cat_BxK: jax.Array
    num_BxJ: jax.Array

    @property
    def batch_size(self) -> int:
        return self.cat_BxK.shape[0]


@dataclasses.dataclass(frozen=True)
class ConditionSpec:
    """Names and vocabularies of the conditions; everything needed to encode raw values and to embed them."""

    categorical_names: tuple[str, ...]
    vocabularies: tuple[tuple[str, ...], ...]  # observed values of each categorical condition, as strings
    numerical_names: tuple[str, ...]
    numerical_min: tuple[float, ...]  # min-max scaling fitted on the training split
    numerical_max: tuple[float, ...]

    def __post_init__(self):
        if len(self.categorical_names) != len(self.vocabularies):
            raise ValueError("ConditionSpec: one vocabulary per categorical condition is required.")
        if not (len(self.numerical_names) == len(self.numerical_min) == len(self.numerical_max)):
            raise ValueError("ConditionSpec: numerical_min/max need one entry per numerical condition.")
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"ConditionSpec: condition names must be unique, got {list(names)}.")

    @property
    def names(self) -> tuple[str, ...]:
        return self.categorical_names + self.numerical_names

    @property
    def num_categories(self) -> tuple[int, ...]:
        """n_i per categorical condition (without the missing row)."""
        return tuple(len(v) for v in self.vocabularies)

    @property
    def num_conditions(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return {k: [list(v) if isinstance(v, tuple) else v for v in getattr(self, k)]
                for k in (f.name for f in dataclasses.fields(self))}

    @classmethod
    def from_dict(cls, d: dict) -> "ConditionSpec":
        return cls(
            categorical_names=tuple(d["categorical_names"]),
            vocabularies=tuple(tuple(v) for v in d["vocabularies"]),
            numerical_names=tuple(d["numerical_names"]),
            numerical_min=tuple(float(x) for x in d["numerical_min"]),
            numerical_max=tuple(float(x) for x in d["numerical_max"]),
        )

    def scale_numerical(self, name: str, value: float) -> float:
        j = self.numerical_names.index(name)
        return float(min_max_scale(value, self.numerical_min[j], self.numerical_max[j]))

    def encode(self, given: dict[str, object], batch_size: int = 1) -> Conditions:
        """Encodes a partial condition dict ``{name: raw value}``; conditions not given are missing.

        Raises a ValueError listing the valid names or values when a name or category is unknown.
        """
        unknown = sorted(set(given) - set(self.names))
        if unknown:
            raise ValueError(f"Unknown condition(s) {unknown}; valid conditions: {list(self.names)}.")
        cat = [MISSING_INDEX] * len(self.categorical_names)
        for i, (name, vocab) in enumerate(zip(self.categorical_names, self.vocabularies)):
            if name in given:
                cat[i] = category_index(name, vocab, given[name])
        num = [float("nan")] * len(self.numerical_names)
        for j, name in enumerate(self.numerical_names):
            if name in given:
                try:
                    num[j] = self.scale_numerical(name, float(given[name]))
                except (TypeError, ValueError):
                    raise ValueError(f"Condition {name!r} is numerical; got {given[name]!r}.") from None
        return Conditions(
            cat_BxK=jnp.tile(jnp.asarray(cat, jnp.int32)[None], (batch_size, 1)),
            num_BxJ=jnp.tile(jnp.asarray(num, jnp.float32)[None], (batch_size, 1)),
        )


def min_max_scale(value, lo, hi):
    """(value - lo) / (hi - lo), elementwise; a constant column (hi == lo) is only shifted, never divided by 0."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return (np.asarray(value, np.float64) - lo) / np.where(hi > lo, hi - lo, 1.0)


def canonical_category(value: object) -> str:
    """Category values are compared as strings; integral floats read from CSVs ("1.0") become "1"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def category_index(name: str, vocabulary: Sequence[str], value: object) -> int:
    """Index (1-based; 0 is missing) of ``value`` in ``vocabulary``, or a clear error naming the valid values."""
    key = canonical_category(value)
    if key not in vocabulary:
        raise ValueError(
            f"Category {key!r} of condition {name!r} was never seen in training; valid values: {list(vocabulary)}."
        )
    return vocabulary.index(key) + 1


def drop_mask_from_uniform(u_BxM: jax.Array, p: jax.Array, mode: str = "per_condition") -> jax.Array:
    """Drop decisions [B, M] from uniform draws: ``u < p`` per condition (the paper), or per row with ``all_at_once``
    (classic condition dropout: all conditions of a row dropped together with probability p), for ablations."""
    if mode == "per_condition":
        return u_BxM < p
    if mode == "all_at_once":
        return jnp.broadcast_to(u_BxM[:, :1] < p, u_BxM.shape)
    raise ValueError(f"Unknown masking mode {mode!r}; choose from {MASKING_MODES}.")


def sample_drop_mask(key: jax.Array, p: jax.Array, batch_size: int, num_conditions: int,
                     mode: str = "per_condition") -> jax.Array:
    """Bernoulli(p) drop decisions, [B, M] bool (see ``drop_mask_from_uniform``)."""
    return drop_mask_from_uniform(jax.random.uniform(key, (batch_size, num_conditions)), p, mode)


def apply_drop_mask(conditions: Conditions, drop_BxM: jax.Array) -> Conditions:
    """Marks the dropped conditions as missing (categorical → index 0, numerical → NaN). Pure."""
    k = conditions.cat_BxK.shape[1]
    cat = jnp.where(drop_BxM[:, :k], MISSING_INDEX, conditions.cat_BxK)
    num = jnp.where(drop_BxM[:, k:], jnp.nan, conditions.num_BxJ)
    return Conditions(cat, num)


def mask_conditions(key: jax.Array, conditions: Conditions, p: jax.Array, mode: str = "per_condition") -> Conditions:
    """Training-time masking: each condition (or each row, see ``sample_drop_mask``) is dropped with probability p."""
    num_conditions = conditions.cat_BxK.shape[1] + conditions.num_BxJ.shape[1]
    drop = sample_drop_mask(key, p, conditions.batch_size, num_conditions, mode)
    return apply_drop_mask(conditions, drop)


def numerical_inputs(num_BxJ: jax.Array, missing: str) -> jax.Array:
    """Per-condition inputs to the numerical linear layers, [B, J, F] (F = 2 with an indicator, else 1)."""
    if missing not in _PLACEHOLDER:
        raise ValueError(f"Unknown numerical missing mode {missing!r}; choose from {NUMERICAL_MISSING_MODES}.")
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
    ``width_mask`` ([embedding_dim], see ``mcjax.models.masked``) narrows every condition's embedding for one run.
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
