"""Mixed categorical/numerical conditions: specification, host encoding and masking (the embedding is
``mcjax.models.embedding``).

Masking happens *before* embedding (the paper's "masked conditioning"): a masked categorical condition becomes its
reserved "missing" index, a masked numerical condition becomes a placeholder value. Index 0 of every categorical
condition is "missing"; observed categories are 1..n_i, so one comparison masks every condition at once.

Labels the data lacks are encoded as missing too, and masking only ever adds missing entries: a training row's
missing labels stay masked at every step. By default (sparsity target ``observed``) the schedule's p_t masks each
*observed* label with probability p_t, so a condition labelled in a fraction r of the rows is given in r (1 − p_t) of
them; with target ``total`` p_t is the fraction of all labels missing, the data's own gaps included (see
``label_drop_probability``). Inference levels mask the observed labels at rate s.

Numerical missing values (``NumericalMissing``):
- ``indicator`` (default): the value is replaced by 0 and a separate 0/1 "missing" input goes into the condition's
  linear layer, so no real value can be mistaken for "missing".
- ``paper``: the value is replaced by -1 (unambiguous because values are min-max scaled to [0, 1]).
- ``reference``: the value is replaced by 0, as the authors' code does in practice.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mcjax.errors import InputError

MISSING_INDEX = 0
NUMERICAL_MISSING_MODES = ("indicator", "paper", "reference")
MASKING_MODES = ("per_condition", "all_at_once")
SPARSITY_TARGETS = ("observed", "total")  # what the schedule's p_t is a fraction of (``label_drop_probability``)


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
            raise InputError("ConditionSpec: one vocabulary per categorical condition is required.")
        if not (len(self.numerical_names) == len(self.numerical_min) == len(self.numerical_max)):
            raise InputError("ConditionSpec: numerical_min/max need one entry per numerical condition.")
        names = self.names
        if len(set(names)) != len(names):
            raise InputError(f"ConditionSpec: condition names must be unique, got {list(names)}.")

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

    def given_values(self, conditions: Conditions, row: int) -> dict[str, object]:
        """``{name: raw value}`` of the conditions given in ``row`` of an encoded batch: ``encode`` read back."""
        cat, num = np.asarray(conditions.cat_BxK)[row], np.asarray(conditions.num_BxJ)[row]
        given = {name: vocab[index - 1] for name, vocab, index in zip(self.categorical_names, self.vocabularies, cat)
                 if index != MISSING_INDEX}
        given.update({name: float(min_max_unscale(value, lo, hi)) for name, value, lo, hi in
                      zip(self.numerical_names, num, self.numerical_min, self.numerical_max) if not np.isnan(value)})
        return given

    def encode(self, given: dict[str, object], batch_size: int = 1) -> Conditions:
        """Encodes a partial condition dict ``{name: raw value}``; conditions not given are missing.

        Raises a ValueError listing the valid names or values when a name or category is unknown.
        """
        unknown = sorted(set(given) - set(self.names))
        if unknown:
            raise InputError(f"Unknown condition(s) {unknown}; valid conditions: {list(self.names)}.")
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
                    raise InputError(f"Condition {name!r} is numerical; got {given[name]!r}.") from None
        return Conditions(
            cat_BxK=jnp.tile(jnp.asarray(cat, jnp.int32)[None], (batch_size, 1)),
            num_BxJ=jnp.tile(jnp.asarray(num, jnp.float32)[None], (batch_size, 1)),
        )


def parse_given(assignments, names) -> dict:
    """``["BikeStyle=BMX", "Teeth on chainring=44"]`` → ``{name: raw value}``; clear errors for malformed or unknown
    names (values are checked when encoded)."""
    given = {}
    for text in assignments or ():
        if "=" not in text:
            raise InputError(f"Condition {text!r}: expected NAME=VALUE.")
        name, value = (part.strip() for part in text.split("=", 1))
        if name not in names:
            raise InputError(f"Unknown condition {name!r}; valid conditions: {list(names)}.")
        given[name] = value
    return given


def min_max_scale(value, lo, hi):
    """(value - lo) / (hi - lo), elementwise; a constant column (hi == lo) is only shifted, never divided by 0."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return (np.asarray(value, np.float64) - lo) / np.where(hi > lo, hi - lo, 1.0)


def min_max_unscale(scaled, lo, hi):
    """The inverse of ``min_max_scale``."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return np.asarray(scaled, np.float64) * np.where(hi > lo, hi - lo, 1.0) + lo


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
        raise InputError(
            f"Category {key!r} of condition {name!r} was never seen in training; valid values: {list(vocabulary)}."
        )
    return vocabulary.index(key) + 1


def drop_mask_from_uniform(u_BxM: jax.Array, p: jax.Array, mode: str = "per_condition") -> jax.Array:
    """Drop decisions [B, M] from uniform draws: ``u < p`` per condition (the paper; p a scalar or one probability
    per condition [M]), or per row with ``all_at_once``
    (classic condition dropout: all conditions of a row dropped together with probability p), for ablations."""
    if mode == "per_condition":
        return u_BxM < p
    if mode == "all_at_once":
        return jnp.broadcast_to(u_BxM[:, :1] < p, u_BxM.shape)
    raise InputError(f"Unknown masking mode {mode!r}; choose from {MASKING_MODES}.")


def validate_masking(masking: str, sparsity_target: str) -> None:
    """One clear error for an unknown masking mode or sparsity target, or a combination that cannot work."""
    if masking not in MASKING_MODES:
        raise InputError(f"train.masking must be one of {MASKING_MODES}, got {masking!r}.")
    if sparsity_target not in SPARSITY_TARGETS:
        raise InputError(f"train.sparsity_target must be one of {SPARSITY_TARGETS}, got {sparsity_target!r}.")
    if sparsity_target == "total" and masking == "all_at_once":
        raise InputError("train.sparsity_target 'total' masks each condition at its own rate; it needs "
                         "train.masking 'per_condition'.")


def label_drop_probability(p, label_rates_M: tuple[float, ...], sparsity_target: str):
    """The probability of masking an observed label: p itself (target ``observed``), or per condition [M] the rate
    that makes p the fraction of all its labels missing (target ``total``): (p − m) / (1 − m) for a condition whose
    data lacks a fraction m of the labels, 0 when m ≥ p (the data's own gaps then exceed the target already)."""
    if sparsity_target == "observed":
        return p
    rates = jnp.asarray(label_rates_M, jnp.float32)
    return jnp.clip((p - (1.0 - rates)) / jnp.maximum(rates, 1e-6), 0.0, 1.0)


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


def observed(conditions: Conditions) -> jax.Array:
    """[B, M] bool: which conditions of each row are given (categorical ones first, as in drop masks)."""
    return jnp.concatenate([jnp.asarray(conditions.cat_BxK) != MISSING_INDEX,
                            ~jnp.isnan(jnp.asarray(conditions.num_BxJ))], axis=1)


def all_missing(num_categories: tuple[int, ...], num_numerical: int, batch_size: int) -> Conditions:
    """A batch in which every condition is masked: the unconditional input."""
    return Conditions(jnp.full((batch_size, len(num_categories)), MISSING_INDEX, jnp.int32),
                      jnp.full((batch_size, num_numerical), jnp.nan, jnp.float32))
