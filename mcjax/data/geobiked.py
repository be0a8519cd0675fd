"""The embedded GeoBiked parameter table (CC BY-NC 4.0, see geobiked/LICENSE) and its column roles."""

import importlib.resources

POINTS = ("rear_wheel_center", "BB", "front_wheel_center", "head_tube_top", "rear_tube_connect_seat_tube",
          "top_tube_connect_seat_tube", "top_tube_connect_head_tube", "down_tube_connect_head_tube", "stem_top",
          "front_fork", "saddle_top", "seat_tube_top")
WHEEL_DIAMETERS = ("Wheel diameter rear", "Wheel diameter front")
# The 26 predicted columns of the paper: 24 keypoint coordinates plus the two wheel diameters.
KEYPOINT_COLUMNS = tuple(f"{axis}_{p}" for p in POINTS for axis in ("x", "y")) + WHEEL_DIAMETERS
CATEGORICAL_COLUMNS = ("BikeStyle", "frame_size", "RIM_STYLE front", "RIM_STYLE rear", "Fork type",
                       "bottle SEATTUBE0 show OHCLASS: True", "bottle DOWNTUBE0 show OHCLASS: True")
NUMERICAL_COLUMNS = ("Teeth on chainring",)
# "Teeth on chainring" is 0 where the count is unknown (2 rows): treated as a missing value, not as 0 teeth.
NUMERICAL_NA_VALUES = (0.0,)


def csv_path() -> str:
    """Path of the embedded table (a gzip-compressed CSV inside the installed package)."""
    return str(importlib.resources.files("mcjax.data").joinpath("geobiked/geobiked_parameters.csv.gz"))
