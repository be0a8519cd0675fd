"""The bike renderer and the image folder source."""

import dataclasses
import pickle

import numpy as np
import pytest
from mcjax.configs.geobiked_vae import get_config

from mcjax.data import geobiked, images, render, tables
from mcjax.data.image_files import ImageFiles, indexed_image_paths


@pytest.fixture(scope="module")
def table():
    return tables.table_from_config(get_config().data)


def _first(geometry, n, **changes):
    subset = {f.name: getattr(geometry, f.name)[:n].copy() for f in dataclasses.fields(geometry)}
    for name, value in changes.items():
        subset[name][:] = value
    return render.BikeGeometry(**subset)


def test_reference_points_land_on_drawn_pixels(table):
    geometry = _first(render.geometry_from_table(table), 6)
    drawn = render.render(geometry, 128)
    assert drawn.shape == (6, 128, 128, 3) and drawn.dtype == np.uint8
    for point in ("BB", "rear_wheel_center", "front_wheel_center", "head_tube_top", "saddle_top",
                  "top_tube_connect_seat_tube"):
        k = geobiked.POINTS.index(point)
        for bike, image in enumerate(drawn):
            col, row = render.world_to_pixel(geometry.points_Nx12x2[bike, k], 128).astype(int)
            assert image[row, col].min() < 160, (point, bike, image[row, col])
    assert (drawn[:, :10] == 255).all()  # the sky stays white


def _wheel_interior(image, geometry, size):
    centre = render.world_to_pixel(geometry.points_Nx12x2[0, 0], size)
    radius = (geometry.wheel_diameters_Nx2[0, 0] / 2 - 60) / ((render.WORLD[2] - render.WORLD[0]) / size)
    rows, cols = np.mgrid[:size, :size]
    inside = (np.hypot(cols + 0.5 - centre[0], rows + 0.5 - centre[1]) < radius) & (
        np.hypot(cols + 0.5 - centre[0], rows + 0.5 - centre[1]) > 4)
    return image[inside].min(axis=-1)


def test_rim_styles_look_different(table):
    geometry = render.geometry_from_table(table)
    styles = [render.render(_first(geometry, 1, rim_styles_Nx2=code), 128)[0] for code in range(3)]
    spoked, disc, trispoke = (_wheel_interior(image, _first(geometry, 1), 128) for image in styles)
    coverage = {name: float(np.mean(values < 250)) for name, values in
                (("spoked", spoked), ("disc", disc), ("trispoke", trispoke))}
    assert coverage["disc"] > 0.95 > coverage["trispoke"] and coverage["spoked"] < 0.95, coverage
    assert abs(coverage["spoked"] - coverage["trispoke"]) > 0.05, coverage
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.abs(styles[a].astype(int) - styles[b].astype(int)).sum() > 1000


def test_bottles_fork_and_chainring_follow_their_conditions(table):
    geometry = render.geometry_from_table(table)
    plain = render.render(_first(geometry, 1, bottles_Nx2=False, fork_types_N=0), 128)[0]
    bottles = render.render(_first(geometry, 1, bottles_Nx2=True, fork_types_N=0), 128)[0]
    fork = render.render(_first(geometry, 1, bottles_Nx2=False, fork_types_N=2), 128)[0]
    no_teeth = render.render(_first(geometry, 1, bottles_Nx2=False, fork_types_N=0, teeth_N=np.nan), 128)[0]
    def green(image):
        r, g, b = np.moveaxis(image.astype(int), -1, 0)
        return np.sum((g > r + 40) & (g > b + 40))

    assert green(plain) == 0 and green(bottles) > 20
    assert np.sum(fork < 128) > np.sum(plain < 128)  # thicker fork blades
    assert np.sum(no_teeth < 250) < np.sum(plain < 250)


def test_render_cache_reuses_the_drawing(table, tmp_path):
    small = table.take(np.arange(5))
    first = render.render_cached(small, 32, str(tmp_path))
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and first.shape == (5, 32, 32, 3)
    modified = files[0].stat().st_mtime_ns
    again = render.render_cached(small, 32, str(tmp_path))
    assert np.array_equal(first, again) and files[0].stat().st_mtime_ns == modified
    render.render_cached(table.take(np.arange(1, 6)), 32, str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 2  # other bikes, another entry


def test_bad_tables_are_rejected(table):
    no_rims = dataclasses.replace(table, categorical_columns=table.categorical_columns[:2],
                                  categories_NxK=table.categories_NxK[:, :2])
    with pytest.raises(ValueError, match="needs the categorical column 'RIM_STYLE rear'"):
        render.geometry_from_table(no_rims)
    odd = table.categories_NxK.copy()
    odd[0, table.categorical_columns.index("RIM_STYLE front")] = "wooden"
    with pytest.raises(ValueError, match=r"cannot draw value\(s\) \['wooden'\]"):
        render.geometry_from_table(dataclasses.replace(table, categories_NxK=odd))
    with pytest.raises(ValueError, match="Image size"):
        render.render(_first(render.geometry_from_table(table), 1), 4)


def test_images_named_by_bike_index(tmp_path):
    from PIL import Image

    for index, colour in ((0, (255, 0, 0)), (5, (0, 0, 255))):
        Image.new("RGB", (40, 20), colour).save(tmp_path / f"{index}.png")
    source = ImageFiles(indexed_image_paths(str(tmp_path), [5, 0]), size=16)
    assert len(source) == 2
    blue, red = source[0], source[1]
    assert blue.shape == (16, 16, 3) and blue.dtype == np.uint8
    assert tuple(blue[8, 8]) == (0, 0, 255) and tuple(red[8, 8]) == (255, 0, 0)
    assert tuple(blue[0, 8]) == (255, 255, 255)  # aspect ratio kept with white padding
    with pytest.raises(ValueError, match=r"7\.png \(table row 1\): no such file"):
        images.readable_rows(indexed_image_paths(str(tmp_path), [0, 7]), skip=False)


def test_image_files_feed_grain(tmp_path):
    """The source as grain uses it: shuffled and batched by a MapDataset, and pickled for its worker processes."""
    grain = pytest.importorskip("grain")
    from PIL import Image

    colours = {0: (255, 0, 0), 5: (0, 0, 255), 9: (0, 255, 0)}
    for index, colour in colours.items():
        Image.new("RGB", (20, 20), colour).save(tmp_path / f"{index}.png")
    source = ImageFiles(indexed_image_paths(str(tmp_path), [5, 0, 9]), size=8)
    batches = list(grain.MapDataset.source(source).shuffle(seed=0).batch(3))
    assert len(batches) == 1 and batches[0].shape == (3, 8, 8, 3) and batches[0].dtype == np.uint8
    drawn = sorted(tuple(int(v) for v in image[4, 4]) for image in batches[0])
    assert drawn == sorted(colours.values())  # every image once, in some order
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[2], source[2])
