"""DVM-Car release → the generic image table: on a miniature release in the published layout."""

import csv
import io
import os
import subprocess
import sys

import pytest

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


def miniature_release(root) -> str:
    """Tables of a tiny DVM-Car release (the Ad table's model column with its leading space), as the release has
    them; returns the tables folder."""
    tables = os.path.join(root, "tables")
    os.makedirs(tables)
    _write(os.path.join(tables, "Image_table.csv"), ["Genmodel_ID", "Image_ID", "Image_name", "Predicted_viewpoint",
                                                     "Quality_check"],
           [["3_1", name.rsplit("$$", 1)[0], name, view, quality] for name, view, quality in IMAGES])
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
