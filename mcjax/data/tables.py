"""Tables of keypoints plus conditions: CSV → validated arrays → seeded split → normalised device-ready data.

Statistics (keypoint min/max, numerical-condition min/max) and category vocabularies are fitted on the training
split only, so nothing about the test rows leaks into training; they are saved with the run (``TableStats``).

Labels may be missing in any condition column: an empty cell, or a value listed in ``numerical_na_values`` /
``categorical_na_values``, is a missing condition (``mcjax.conditions``: masked always, in training and at
inference). A condition column with no label at all is an error.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import os
from typing import Sequence

import numpy as np

from mcjax.conditions import MISSING_INDEX, Conditions, ConditionSpec, canonical_category, category_index, min_max_scale
from mcjax.errors import InputError

MISSING_CATEGORY = ""  # a missing categorical label in a RawTable


@dataclasses.dataclass(frozen=True)
class RawTable:
    """A table as read: keypoints in their own units, categories as canonical strings, NaN = missing number."""

    keypoint_columns: tuple[str, ...]
    keypoints_NxD: np.ndarray  # float64
    categorical_columns: tuple[str, ...]
    categories_NxK: np.ndarray  # str objects, MISSING_CATEGORY = missing
    numerical_columns: tuple[str, ...]
    numerical_NxJ: np.ndarray  # float64, NaN = missing

    def __len__(self) -> int:
        return self.keypoints_NxD.shape[0]

    def take(self, rows: np.ndarray) -> "RawTable":
        return dataclasses.replace(self, keypoints_NxD=self.keypoints_NxD[rows],
                                   categories_NxK=self.categories_NxK[rows], numerical_NxJ=self.numerical_NxJ[rows])


def read_csv_columns(path: str) -> dict[str, list[str]]:
    """All columns of a CSV (optionally gzip-compressed) as lists of strings, keyed by header."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Table not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise InputError(f"Table {path} is empty (no header).")
    header, body = rows[0], [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise InputError(f"Table {path} has a header but no rows.")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InputError(f"Table {path}, line {line}: {len(row)} cells, but the header has {len(header)}.")
    return {name: [row[i] for row in body] for i, name in enumerate(header)}


def _parse_numbers(path: str, column: str, cells: Sequence[str], allow_missing: bool) -> np.ndarray:
    values = np.empty(len(cells), np.float64)
    for row, cell in enumerate(cells):
        text = cell.strip()
        try:
            values[row] = float(text) if text else math.nan
        except ValueError:
            raise InputError(f"Table {path}: column {column!r}, row {row}: {cell!r} is not a number.") from None
        if not allow_missing and not math.isfinite(values[row]):
            raise InputError(f"Table {path}: column {column!r}, row {row}: value {cell!r} is missing or NaN; "
                             f"keypoints must all be finite numbers.")
    return values


def require_columns(path: str, columns: dict, wanted: Sequence[str], kinds: str) -> None:
    """Every wanted column exists, and none is listed twice (``kinds`` names the lists, for the message)."""
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise InputError(f"Table {path} lacks column(s) {missing}; it has {list(columns)}.")
    duplicated = sorted({c for c in wanted if list(wanted).count(c) > 1})
    if duplicated:
        raise InputError(f"Column(s) {duplicated} are listed more than once across {kinds}.")


def read_conditions(path: str, columns: dict, categorical_columns: Sequence[str], numerical_columns: Sequence[str],
                    numerical_na_values: Sequence[float], categorical_na_values: Sequence[str]):
    """(categories [N, K] as canonical strings, numbers [N, J]) of a table's condition columns; empty cells and the
    listed NA values are missing (MISSING_CATEGORY, NaN)."""
    num_rows = len(next(iter(columns.values())))
    numerical = np.stack([_parse_numbers(path, c, columns[c], True) for c in numerical_columns], axis=1) \
        if numerical_columns else np.zeros((num_rows, 0))
    numerical[np.isin(numerical, np.asarray(numerical_na_values, np.float64))] = np.nan
    na_categories = {canonical_category(v) for v in categorical_na_values} | {MISSING_CATEGORY}
    categories = np.array([[MISSING_CATEGORY if (value := canonical_category(columns[c][r])) in na_categories
                            else value for c in categorical_columns]
                           for r in range(num_rows)], dtype=object).reshape(num_rows, -1)
    return categories, numerical


def load_table(path: str, keypoint_columns: Sequence[str], categorical_columns: Sequence[str],
               numerical_columns: Sequence[str], numerical_na_values: Sequence[float] = (),
               categorical_na_values: Sequence[str] = ()) -> RawTable:
    """Reads and validates a table. Empty condition cells and the listed NA values mean missing."""
    if not keypoint_columns:
        raise InputError("data.keypoint_columns is empty: name at least one keypoint column.")
    columns = read_csv_columns(path)
    require_columns(path, columns, list(keypoint_columns) + list(categorical_columns) + list(numerical_columns),
                    "keypoint/categorical/numerical")
    keypoints = np.stack([_parse_numbers(path, c, columns[c], False) for c in keypoint_columns], axis=1)
    categories, numerical = read_conditions(path, columns, categorical_columns, numerical_columns,
                                            numerical_na_values, categorical_na_values)
    table = RawTable(tuple(keypoint_columns), keypoints, tuple(categorical_columns), categories,
                     tuple(numerical_columns), numerical)
    require_labels(table, f"Table {path}")
    return table


def observed_labels(table: RawTable) -> np.ndarray:
    """[N, M] bool: which condition labels the table has (categorical columns first)."""
    return np.concatenate([table.categories_NxK != MISSING_CATEGORY, np.isfinite(table.numerical_NxJ)], axis=1)


def require_labels(table: RawTable, where: str) -> None:
    """Every condition column needs at least one label: a column with none teaches the model nothing."""
    names = table.categorical_columns + table.numerical_columns
    unlabelled = [name for name, any_label in zip(names, observed_labels(table).any(axis=0)) if not any_label]
    if unlabelled:
        raise InputError(f"{where}: condition column(s) {unlabelled} have no value in any row (every cell empty or a "
                         f"listed NA value); label some rows or leave the column out of the config.")


def split_indices(table: RawTable, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split in which every category value occurs in the training part.

    One row per category value (chosen at random) is pinned to training; the test rows are then drawn from the rest.
    This always succeeds, unlike re-drawing random splits until they happen to cover every category.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"data.test_fraction must be in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    n = len(table)
    order = rng.permutation(n)
    pinned = np.zeros(n, bool)
    for k in range(table.categories_NxK.shape[1]):
        seen: set[str] = set()
        for row in order:
            value = table.categories_NxK[row, k]
            if value != MISSING_CATEGORY and value not in seen:
                seen.add(value)
                pinned[row] = True
    num_test = int(round(test_fraction * n))
    candidates = order[~pinned[order]]
    if num_test < 1 or num_test > len(candidates):
        raise InputError(f"Cannot split {n} rows with test_fraction {test_fraction}: {int(pinned.sum())} rows are "
                         f"needed in training to cover every category value.")
    test = np.sort(candidates[:num_test])
    train = np.setdiff1d(np.arange(n), test)
    return train, test


@dataclasses.dataclass(frozen=True)
class TableStats:
    """Everything fitted on the training split: keypoint scaling and the condition spec (vocabularies, scaling)."""

    keypoint_columns: tuple[str, ...]
    keypoint_min: tuple[float, ...]
    keypoint_max: tuple[float, ...]
    conditions: ConditionSpec
    label_rates: tuple[float, ...] = ()  # per condition (spec order): the training rows that have the label

    @classmethod
    def fit(cls, train: RawTable) -> "TableStats":
        require_labels(train, "The training split")
        vocabularies = tuple(tuple(sorted(set(train.categories_NxK[:, k]) - {MISSING_CATEGORY}, key=_natural_key))
                             for k in range(len(train.categorical_columns)))
        with np.errstate(all="ignore"):
            num_min = [float(np.nanmin(c)) if np.any(np.isfinite(c)) else 0.0 for c in train.numerical_NxJ.T]
            num_max = [float(np.nanmax(c)) if np.any(np.isfinite(c)) else 1.0 for c in train.numerical_NxJ.T]
        spec = ConditionSpec(train.categorical_columns, vocabularies, train.numerical_columns,
                             tuple(num_min), tuple(num_max))
        return cls(train.keypoint_columns, tuple(train.keypoints_NxD.min(0).tolist()),
                   tuple(train.keypoints_NxD.max(0).tolist()), spec,
                   tuple(observed_labels(train).mean(axis=0).tolist()))

    def label_rate_text(self) -> str:
        """One line for the start of training: each partly labelled condition's label rate."""
        partial = [f"{name} {rate:.1%}" for name, rate in zip(self.conditions.names, self.label_rates) if rate < 1]
        if not partial:
            return "every condition fully labelled"
        rest = "; the others fully labelled" if len(partial) < len(self.label_rates) else ""
        return f"labels given: {', '.join(partial)}{rest}"

    @property
    def keypoint_scale(self) -> np.ndarray:
        """Units (e.g. mm) per normalised unit of each keypoint column; 1 for a constant column."""
        lo, hi = np.asarray(self.keypoint_min), np.asarray(self.keypoint_max)
        return np.where(hi > lo, hi - lo, 1.0)

    def normalise(self, keypoints_NxD: np.ndarray) -> np.ndarray:
        return min_max_scale(keypoints_NxD, self.keypoint_min, self.keypoint_max).astype(np.float32)

    def denormalise(self, normalised_NxD: np.ndarray) -> np.ndarray:
        return np.asarray(normalised_NxD, np.float64) * self.keypoint_scale + np.asarray(self.keypoint_min)

    def encode_conditions(self, table: RawTable) -> Conditions:
        """Category strings → indices (unknown ones raise), numbers → min-max scaled (NaN stays missing)."""
        spec = self.conditions
        def index(k: int, value: str) -> int:
            if value == MISSING_CATEGORY:
                return MISSING_INDEX
            return category_index(spec.categorical_names[k], spec.vocabularies[k], value)

        cat = np.array([[index(k, value) for k, value in enumerate(row)] for row in table.categories_NxK],
                       np.int32).reshape(len(table), -1)
        num = min_max_scale(table.numerical_NxJ, spec.numerical_min, spec.numerical_max).astype(np.float32)
        return Conditions(cat, num)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["conditions"] = self.conditions.to_dict()
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TableStats":
        d = json.loads(text)
        return cls(tuple(d["keypoint_columns"]), tuple(d["keypoint_min"]), tuple(d["keypoint_max"]),
                   ConditionSpec.from_dict(d["conditions"]), tuple(d.get("label_rates", ())))


def _natural_key(value: str):
    """Numbers sort numerically, words alphabetically (so vocabularies read 0, 1, 2 and XS, S, ... by name)."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


@dataclasses.dataclass(frozen=True)
class TableData:
    """A split, normalised table: numpy arrays ready to be put on device."""

    stats: TableStats
    train_x_NxD: np.ndarray
    train_conditions: Conditions
    test_x_NxD: np.ndarray
    test_conditions: Conditions
    train_rows: np.ndarray  # row numbers in the original table
    test_rows: np.ndarray


def prepare_table(table: RawTable, test_fraction: float, seed: int) -> TableData:
    """Split, fit statistics on the training part, normalise both parts."""
    train_rows, test_rows = split_indices(table, test_fraction, seed)
    train, test = table.take(train_rows), table.take(test_rows)
    stats = TableStats.fit(train)
    return TableData(stats, stats.normalise(train.keypoints_NxD), stats.encode_conditions(train),
                     stats.normalise(test.keypoints_NxD), stats.encode_conditions(test), train_rows, test_rows)


def holdout_validation(data: TableData, fraction: float, seed: int) -> TableData:
    """Evaluates on a seeded ``fraction`` of the training split instead of the test split, and trains on the rest:
    model selection (a hyperparameter search) that never sees the test rows. Statistics stay the training split's."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"data.validation_fraction must be in (0, 1), got {fraction}.")
    order = np.random.default_rng(seed).permutation(len(data.train_x_NxD))
    num_validation = max(1, int(round(fraction * len(order))))
    validation, rest = np.sort(order[:num_validation]), np.sort(order[num_validation:])
    take = lambda rows: Conditions(*(a[rows] for a in data.train_conditions))  # noqa: E731
    return dataclasses.replace(data, train_x_NxD=data.train_x_NxD[rest], train_conditions=take(rest),
                               test_x_NxD=data.train_x_NxD[validation], test_conditions=take(validation),
                               train_rows=data.train_rows[rest], test_rows=data.train_rows[validation])


def table_from_config(data_config) -> RawTable:
    """Loads the table described by a ``config.data`` block (see configs/geobiked_vae.py)."""
    return load_table(data_config.csv_path, data_config.keypoint_columns, data_config.categorical_columns,
                      data_config.numerical_columns, data_config.numerical_na_values,
                      data_config.categorical_na_values)


def csv_text(columns: dict[str, Sequence]) -> str:
    """Writes columns as CSV text (used for samples.csv)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = list(columns)
    writer.writerow(names)
    writer.writerows(zip(*(columns[n] for n in names)))
    return buffer.getvalue()
