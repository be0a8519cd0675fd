"""Tables whose rows are images: a column of image paths plus condition columns, and no keypoints.

The result is a ``tables.RawTable`` with zero keypoint columns, so the split, ``TableStats`` (vocabularies, numerical
scaling) and condition encoding are the keypoint tables' own.
"""

from __future__ import annotations

import numpy as np

from mcjax.data import tables
from mcjax.data.image_files import relative_image_paths
from mcjax.errors import InputError


def read_image_table(data_config) -> tuple[tables.RawTable, list[str]]:
    """(conditions of every row, path of every row's image) for a ``config.data`` block with ``image_column``
    (configs/image_folder_ldm.py)."""
    path, column = data_config.csv_path, data_config.image_column
    if not path:
        raise InputError("data.csv_path is empty: name the CSV that lists the images and their conditions.")
    columns = tables.read_csv_columns(path)
    categorical, numerical = tuple(data_config.categorical_columns), tuple(data_config.numerical_columns)
    tables.require_columns(path, columns, (column,) + categorical + numerical, "image/categorical/numerical")
    categories_NxK, numbers_NxJ = tables.read_conditions(path, columns, categorical, numerical,
                                                         data_config.numerical_na_values,
                                                         data_config.categorical_na_values)
    raw = tables.RawTable((), np.zeros((len(columns[column]), 0)), categorical, categories_NxK, numerical,
                          numbers_NxJ)
    tables.require_labels(raw, f"Table {path}")
    return raw, relative_image_paths(data_config.image_dir, columns[column], column)

