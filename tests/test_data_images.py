"""Image datasets from files: decoding of every mode and format, the image table, bad input, the latent cache."""

import csv
import os

import numpy as np
import pytest
from mcjax.configs.image_folder_ldm import get_config
from PIL import Image, ImageDraw

from mcjax.data.image_files import ImageFiles, decode
from mcjax.data.images import load_images
from mcjax.errors import InputError

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 60, 220)}
# (subfolder, extension, mode) cycled over the rows: nested folders, every common format and mode
KINDS = [("a", ".png", "RGB"), ("a/b", ".jpg", "RGB"), ("c", ".webp", "RGB"), ("a/b", ".png", "RGBA"),
         ("c/d/e", ".png", "P"), ("", ".png", "L")]


def shape_picture(digit: int, colour: str, size: int = 24) -> Image.Image:
    """A coloured square or disc on white with the digit's number of dots: conditions that are visible."""
    image = Image.new("RGB", (size + 8, size), "white")
    draw = ImageDraw.Draw(image)
    box = (4, 2, size + 4, size - 2)
    (draw.ellipse if digit % 2 else draw.rectangle)(box, fill=COLOURS[colour])
    for dot in range(digit):
        draw.rectangle((6 + 5 * dot, size // 2, 8 + 5 * dot, size // 2 + 2), fill="white")
    return image


def save_as(image: Image.Image, path: str, mode: str) -> None:
    if mode == "RGBA":  # transparent where white, so compositing on white must give the picture back
        rgba = image.convert("RGBA")
        pixels = np.asarray(rgba).copy()
        white = np.all(pixels[..., :3] == 255, axis=-1)
        pixels[white] = (0, 0, 0, 0)
        image = Image.fromarray(pixels, "RGBA")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    elif mode == "L":
        image = image.convert("L")
    image.save(path, **({"lossless": True} if path.endswith(".webp") else {}))


def write_shapes(folder, num_rows: int = 40) -> str:
    """A folder of shape images in nested subfolders and mixed formats/modes, and labels.csv listing them (digit and
    colour categorical, a numerical size with the value -1 meaning missing)."""
    rows = []
    for i in range(num_rows):
        digit, colour = i % 4, list(COLOURS)[i % 3]
        sub, ext, mode = KINDS[i % len(KINDS)]
        relative = os.path.join(sub, f"img_{i}{ext}")
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        save_as(shape_picture(digit, colour), os.path.join(folder, relative), mode)
        rows.append([relative, digit, colour, -1 if i == 5 else 10 + i % 7])
    path = os.path.join(folder, "labels.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["file", "digit", "colour", "size"], *rows])
    return path


def shapes_config(folder, csv_path: str):
    config = get_config("smoke")
    config.data.update(dict(image_dir=str(folder), csv_path=csv_path, image_column="file",
                            categorical_columns=("digit", "colour"), numerical_columns=("size",),
                            numerical_na_values=(-1.0,), image_size=16))
    return config


def test_every_mode_and_format_decodes_to_the_same_picture(tmp_path):
    picture = shape_picture(3, "blue").convert("P", palette=Image.Palette.ADAPTIVE, colors=8).convert("RGB")
    expected = decode(_saved(tmp_path, picture, "RGB", ".png"), 16)
    assert expected.shape == (16, 16, 3) and expected.dtype == np.uint8
    for mode, ext in (("RGBA", ".png"), ("P", ".png"), ("RGB", ".webp"), ("RGBA", ".webp"), ("RGB", ".bmp")):
        np.testing.assert_array_equal(decode(_saved(tmp_path, picture, mode, ext), 16), expected, err_msg=mode + ext)
    jpeg = decode(_saved(tmp_path, picture, "RGB", ".jpg"), 16).astype(int)
    assert np.mean(np.abs(jpeg - expected)) < 6  # lossy, but the same picture
    grey = picture.convert("L")
    np.testing.assert_array_equal(decode(_saved(tmp_path, grey, "L", ".png"), 16),
                                  decode(_saved(tmp_path, grey.convert("RGB"), "RGB", ".png"), 16))


def _saved(folder, image, mode, ext) -> str:
    path = str(folder / f"{mode}_{len(os.listdir(folder))}{ext}")
    save_as(image, path, mode)
    return path


def test_pad_keeps_the_whole_picture_and_crop_fills_the_square(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 5, 20))  # a blue left edge
    image.save(tmp_path / "wide.png")
    padded, cropped = (decode(str(tmp_path / "wide.png"), 16, fit) for fit in ("pad", "crop"))
    assert tuple(padded[0, 8]) == (255, 255, 255) and tuple(padded[8, 0])[2] > 200  # white band, blue edge kept
    assert tuple(cropped[0, 8]) == (255, 0, 0) and tuple(cropped[8, 0]) == (255, 0, 0)  # filled, edge cut off
    with pytest.raises(InputError, match="image_fit 'stretch'"):
        ImageFiles([str(tmp_path / "wide.png")], 16, "stretch")


def test_image_files_decode_only_what_is_asked_in_order(tmp_path):
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(paths[-1])
    files = ImageFiles(paths, 8, workers=2)
    assert files.shape == (5, 8, 8, 3) and len(files) == 5
    np.testing.assert_array_equal(files[np.array([3, 0])][:, 0, 0, 0], [120, 0])
    batches = list(files.batches(2))
    assert [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), files[:])
    before = files.fingerprint()
    assert ImageFiles(paths, 8, workers=2).fingerprint() == before
    os.utime(paths[2], ns=(0, 10**9))  # a changed file: same name, new mtime
    assert files.fingerprint() != before


def test_image_table_with_nested_folders_and_mixed_formats(tmp_path):
    config = shapes_config(tmp_path, write_shapes(tmp_path))
    images = load_images(config.data)
    data = images.table
    assert images.images_NxHxWx3.shape == (40, 16, 16, 3)
    assert data.stats.keypoint_columns == () and data.train_x_NxD.shape == (len(data.train_rows), 0)
    assert data.stats.conditions.vocabularies == (("0", "1", "2", "3"), ("blue", "green", "red"))
    assert len(data.train_rows) + len(data.test_rows) == 40
    conditions = np.concatenate([data.train_conditions.num_BxJ, data.test_conditions.num_BxJ])
    assert np.isnan(conditions).sum() == 1  # size -1 is missing
    row = int(data.test_rows[0])
    sub, ext, mode = KINDS[row % len(KINDS)]
    truth = decode(str(tmp_path / sub / f"img_{row}{ext}"), 16)
    np.testing.assert_array_equal(images.images_NxHxWx3[data.test_rows[:1]][0], truth)


def _edit_csv(path, edit) -> None:
    rows = list(csv.reader(open(path)))
    edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _set_file(row: int, value: str):
    def edit(rows):
        rows[row + 1][0] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set_file(3, "a/gone.png"), r"a/gone.png \(table row 3\): no such file"),
    (_set_file(7, "../x.png"), r"row 7: image path '../x.png' leads out of data.image_dir"),
    (_set_file(8, "a/../../x.png"), r"row 8: image path 'a/../../x.png' leads out of data.image_dir"),
    (_set_file(2, "/etc/x.png"), r"row 2: image path '/etc/x.png' is absolute"),
    (_set_file(9, "a/img_0.png"), r"Rows 0 and 9 both name image .*a/img_0.png \(duplicate image rows\)"),
    (lambda rows: rows.__delitem__(slice(1, None)), "has a header but no rows"),
    (lambda rows: rows[0].__setitem__(0, "path"), r"lacks column\(s\) \['file'\]"),
])
def test_bad_image_tables_are_one_clear_error(tmp_path, edit, message):
    config = shapes_config(tmp_path, write_shapes(tmp_path, 12))
    _edit_csv(config.data.csv_path, edit)
    with pytest.raises(InputError, match=message):
        load_images(config.data)


def test_unreadable_images_stop_the_run_or_are_skipped_and_counted(tmp_path, capsys):
    config = shapes_config(tmp_path, write_shapes(tmp_path, 24))
    (tmp_path / "a" / "img_0.png").write_text("not an image")
    os.remove(tmp_path / "c" / "img_2.webp")
    with pytest.raises(InputError, match=r"a/img_0.png \(table row 0\): not a readable image .*\(1 more\).*"
                                         r"skip_unreadable_images=True"):
        load_images(config.data)
    config.data.skip_unreadable_images = True
    images = load_images(config.data)
    assert "skipped 2 of 24 rows" in capsys.readouterr().out
    assert len(images.images_NxHxWx3) == 22
    kept = sorted(np.concatenate([images.table.train_rows, images.table.test_rows]))
    assert kept == list(range(22))
    assert 0 not in images.images_NxHxWx3.rows and 2 not in images.images_NxHxWx3.rows


def test_an_image_damaged_past_its_header_is_named_with_its_row(tmp_path):
    config = shapes_config(tmp_path, write_shapes(tmp_path, 12))
    path = tmp_path / "a" / "img_0.png"
    path.write_bytes(path.read_bytes()[:60])  # the header survives, the pixels do not
    images = load_images(config.data)
    with pytest.raises(InputError, match=r"img_0.png \(table row 0\) cannot be read"):
        images.images_NxHxWx3[np.arange(12)]


def test_missing_labels_are_missing_conditions(tmp_path):
    config = shapes_config(tmp_path, write_shapes(tmp_path, 24))
    config.data.categorical_na_values = ("unknown",)
    _edit_csv(config.data.csv_path, lambda rows: (rows[4].__setitem__(2, ""), rows[5].__setitem__(2, "unknown")))
    data = load_images(config.data).table
    assert data.stats.conditions.vocabularies[1] == ("blue", "green", "red")
    cat = np.concatenate([data.train_conditions.cat_BxK, data.test_conditions.cat_BxK])
    assert (cat[:, 1] == 0).sum() == 2  # index 0: missing
