"""DVM-Car release → the generic image table: on a miniature release in the published layout."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

from mcjax.data import dvm_car

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = [  # Image_name, Predicted_viewpoint, Quality_check
    ("Audi$$A3$$2017$$Black$$3_1$$1$$image_0.jpg", "0", "P"),
    ("Audi$$A3$$2017$$Black$$3_1$$2$$image_1.jpg", "90", "P"),  # a side view
    ("Audi$$A3$$2018$$Red$$3_2$$1$$image_0.jpg", "0", "N"),  # failed the quality check
    ("Audi$$A3$$2018$$White$$3_3$$1$$image_0.jpg", "0", "P"),
    ("Kia$$Rio$$2015$$Blue$$9_1$$1$$image_0.jpg", "0", "P"),
]


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


COLOURS = {"Black": (20, 20, 20), "Red": (200, 30, 30), "White": (235, 235, 235), "Blue": (30, 60, 200)}


def write_images(folder, images=IMAGES) -> None:
    """A front view per image name of the miniature release, in the release's Brand/Model/Year/Colour folders."""
    for name, _, _ in images:
        parts = name.split("$$")
        os.makedirs(os.path.join(folder, *parts[:4]), exist_ok=True)
        image = Image.new("RGB", (40, 30), "white")
        ImageDraw.Draw(image).rectangle((6, 8, 34, 24), fill=COLOURS[parts[3]])
        image.save(os.path.join(folder, *parts[:4], name))


def miniature_release(root, images=IMAGES) -> str:
    """Tables of a tiny DVM-Car release (the Ad table's model column with its leading space), as the release has
    them; returns the tables folder."""
    tables = os.path.join(root, "tables")
    os.makedirs(tables)
    _write(os.path.join(tables, "Image_table.csv"), ["Genmodel_ID", "Image_ID", "Image_name", "Predicted_viewpoint",
                                                     "Quality_check"],
           [["3_1", name.rsplit("$$", 1)[0], name, view, quality] for name, view, quality in images])
    ad_header = ["Maker", " Genmodel", "Adv_year", "Bodytype", "Length", "Width", "Height", "Door_num", "Seat_num",
                 "Engine_power", "Average_mpg", "Top_speed"]
    _write(os.path.join(tables, "Ad_table (extra).csv"), ad_header, [
        ["Audi", "A3", "2017", "", "4310", "1785", "1425", "5", "5", "", "45 mpg", ""],
        ["Audi", "A3", "2017", "Hatchback", "", "", "", "", "", "150", "", "130 mph"],  # fills the first one's gaps
        ["Audi", "A3", "2018", "Saloon", "4456", "1796", "1416", "4", "5", "110", "60.1 mpg", "124 mph"],
    ])
    _write(os.path.join(tables, "Price_table.csv"), ["Maker", "Genmodel", "Genmodel_ID", "Year", "Entry_price"],
           [["Audi", "A3", "3_1", "2017", "19950"], ["Kia", "Rio", "9_1", "2016", "11000"]])
    return tables


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_front_views_that_passed_the_quality_check_with_their_conditions(tmp_path):
    rows = _rows(dvm_car.prepare(miniature_release(str(tmp_path))))
    assert [r["image"] for r in rows] == ["Audi/A3/2017/Black/" + IMAGES[0][0], "Audi/A3/2018/White/" + IMAGES[3][0],
                                          "Kia/Rio/2015/Blue/" + IMAGES[4][0]]
    audi = rows[0]
    assert (audi["brand"], audi["model"], audi["colour"], audi["year"], audi["body_type"]) == (
        "Audi", "A3", "Black", "2017", "Hatchback")  # the first advert with a body type
    assert (audi["length"], audi["engine_power"], audi["mpg"], audi["top_speed"], audi["entry_price"]) == (
        "4310", "150", "45", "130", "19950")
    assert rows[1]["mpg"] == "60.1" and rows[1]["entry_price"] == ""  # no 2018 price: a missing condition
    kia = rows[2]  # no advert and no 2015 price: everything but the file name's values is missing
    assert kia["brand"] == "Kia" and kia["year"] == "2015"
    assert all(kia[c] == "" for c in ("body_type", "entry_price", "length", "doors", "mpg", "top_speed"))


def test_filters_can_be_widened(tmp_path):
    assert len(_rows(dvm_car.prepare(miniature_release(str(tmp_path)), viewpoints=(), quality=()))) == 5


def test_bad_releases_give_one_clear_line(tmp_path):
    tables = miniature_release(str(tmp_path))
    os.remove(os.path.join(tables, "Price_table.csv"))
    with pytest.raises(ValueError, match="'Price_table.csv' not found"):
        dvm_car.prepare(tables)
    with pytest.raises(ValueError, match="No image .* passes the filters"):
        dvm_car.prepare(miniature_release(str(tmp_path / "b")), viewpoints=("45",))
    _write(os.path.join(tables, "Price_table.csv"), ["Maker", "Genmodel", "Year"], [["Audi", "A3", "2017"]])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['Entry_price'\]"):
        dvm_car.prepare(tables)


def test_the_command_writes_the_table_and_reports_errors_in_one_line(tmp_path):
    tables = miniature_release(str(tmp_path))
    output = tmp_path / "dvm.csv"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "prepare_dvm.py"), f"--tables={tables}",
                           f"--output={output}"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "wrote 3 images" in done.stdout and len(_rows(output.read_text())) == 3
    failed = subprocess.run([sys.executable, os.path.join(ROOT, "prepare_dvm.py"), f"--tables={tmp_path}/none",
                             f"--output={output}"], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 2 and failed.stderr.strip().startswith("error: DVM-Car table 'Image_table.csv'")
    assert len(failed.stderr.strip().splitlines()) == 1


def _run(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


@pytest.mark.slow  # about 100 s on 2 cores: the whole pipeline, compiled in two processes
def test_a_miniature_release_trains_and_samples_through_configs_dvm_ldm(tmp_path):
    from tests.test_train_ldm_pipeline import TINY

    more = [(f"{car}$${2017 + i % 2}$${colour}$$5_{i}$$1$$image_0.jpg", "0", "P")
            for i, (car, colour) in enumerate(zip(["Audi$$A3", "Kia$$Rio"] * 6, ["Black", "Blue", "Red"] * 4))]
    tables = miniature_release(str(tmp_path), IMAGES + more)
    write_images(tmp_path / "images", IMAGES + more)
    table = tmp_path / "dvm.csv"
    assert _run("prepare_dvm.py", f"--tables={tables}", f"--output={table}").returncode == 0
    workdir = tmp_path / "run"
    overrides = {**TINY, "data.test_fraction": 0.25, "data.image_dir": tmp_path / "images", "data.csv_path": table,
                 "train.batch_size": 2, "eval.batch_size": 2, "compilation_cache_dir": tmp_path / "xla"}
    result = _run("train.py", "--config", "configs/dvm_ldm.py:smoke", f"--workdir={workdir}",
                  *(f"--config.{path}={value}" for path, value in overrides.items()))
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((workdir / "stats.json").read_text())
    assert stats["label_rates"][dvm_car.CATEGORICAL.index("body_type")] < 1  # the Kia's missing body type
    result = _run("sample.py", f"--workdir={workdir}", "--condition=brand=Audi", "--condition=mpg=50",
                  "--num_samples=2", "--num_steps=2", f"--output_dir={tmp_path / 'samples'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "samples")) == ["sample_000.png", "sample_001.png", "samples.png"]
