"""Writing generated samples: the folder's layout, GeoBiked bikes as line drawings, other tables as point clouds."""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np

from mcjax.data import geobiked
from mcjax.eval.report import figure

# Frame segments between GeoBiked reference points (wheels are drawn from their centres and diameters).
BIKE_SEGMENTS = (
    ("rear_wheel_center", "BB"),  # chain stay
    ("rear_wheel_center", "rear_tube_connect_seat_tube"),  # seat stay
    ("BB", "top_tube_connect_seat_tube"),  # seat tube
    ("top_tube_connect_seat_tube", "seat_tube_top"),
    ("seat_tube_top", "saddle_top"),  # seat post
    ("top_tube_connect_seat_tube", "top_tube_connect_head_tube"),  # top tube
    ("BB", "down_tube_connect_head_tube"),  # down tube
    ("down_tube_connect_head_tube", "head_tube_top"),  # head tube
    ("head_tube_top", "stem_top"),  # stem
    ("down_tube_connect_head_tube", "front_fork"),  # fork
    ("front_fork", "front_wheel_center"),
)


def _point(row: dict, name: str) -> tuple[float, float]:
    return row[f"x_{name}"], row[f"y_{name}"]


def draw_bike(ax, row: dict) -> None:
    """One bike from a dict of GeoBiked columns (millimetres)."""
    from matplotlib.patches import Circle

    for centre, diameter in (("rear_wheel_center", "Wheel diameter rear"),
                             ("front_wheel_center", "Wheel diameter front")):
        ax.add_patch(Circle(_point(row, centre), row[diameter] / 2, fill=False, lw=1.2, color="0.25"))
    for a, b in BIKE_SEGMENTS:
        (xa, ya), (xb, yb) = _point(row, a), _point(row, b)
        ax.plot([xa, xb], [ya, yb], color="tab:blue", lw=1.8, solid_capstyle="round")
    x, y = _point(row, "saddle_top")
    ax.plot([x - 60, x + 80], [y, y], color="black", lw=3)


def draw_points(ax, row: dict, columns) -> None:
    """Any table: plots the (x_name, y_name) column pairs, or every value against its index if there are none."""
    pairs = [(c, "y_" + c[2:]) for c in columns if c.startswith("x_") and "y_" + c[2:] in row]
    if pairs:
        ax.scatter([row[x] for x, _ in pairs], [row[y] for _, y in pairs], s=10)
    else:
        ax.plot([row[c] for c in columns], "o", ms=3)


def is_geobiked(columns) -> bool:
    return set(geobiked.KEYPOINT_COLUMNS) <= set(columns)


def save_grid(rows: list[dict], columns, path: str, titles=None, cols: int = 4) -> None:
    """A PNG grid with one drawing per row dict (bikes when the GeoBiked columns are present)."""
    n = len(rows)
    ncols = min(cols, n)
    nrows = math.ceil(n / ncols)
    fig = figure(3.2 * ncols, 2.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    bikes = is_geobiked(columns)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        draw_bike(ax, rows[i]) if bikes else draw_points(ax, rows[i], columns)
        ax.set_aspect("equal")
        ax.autoscale_view()
        if titles:
            ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def rows_from_array(values_NxD: np.ndarray, columns) -> list[dict]:
    return [dict(zip(columns, map(float, v))) for v in values_NxD]


def write_samples(output_dir: str, per_sample: dict[str, Callable[[str], object]],
                  write_grid: Callable[[str], object]) -> list[str]:
    """The samples folder: each ``name`` of ``per_sample`` written by its writer (given the path), then all samples in
    one picture, ``samples.png``; returns the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, name) for name in [*per_sample, "samples.png"]]
    for path, write in zip(paths, [*per_sample.values(), write_grid]):
        write(path)
    return paths
