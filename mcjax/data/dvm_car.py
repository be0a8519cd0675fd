"""DVM-Car (Huang et al. 2022, deepvisualmarketing.github.io), the paper's second image dataset, as a generic image
table: one row per image with its path and the authors' 14 conditions (``configs/dvm_ldm.py``).

Users download the release themselves. Its images sit in ``Brand/Model/Year/Colour/`` folders and are named
``Brand$$Model$$Year$$Colour$$<advert>$$<n>$$image_<k>.jpg``; its tables are ``Image_table.csv`` (``Image_name``,
``Predicted_viewpoint``, ``Quality_check``, …), ``Ad_table (extra).csv`` (``Maker``, `` Genmodel`` — with a leading
space in the release —, ``Adv_year``, ``Bodytype``, ``Length``, ``Width``, ``Height``, ``Door_num``, ``Seat_num``,
``Engine_power``, ``Average_mpg`` like "45 mpg", ``Top_speed`` like "120 mph") and ``Price_table.csv`` (``Maker``,
``Genmodel``, ``Year``, ``Entry_price``). Column names are matched after stripping spaces.

As in the authors' code: brand, model, year and colour come from the file name; entry price from the price table's
row of that maker, model and year; body type, size, doors, seats, power, mpg and top speed from the first advert of
that maker, model and year (``Adv_year``) that has the value. A value no table holds is left empty — a *missing*
condition (the authors' code wrote -1), which masked conditioning handles. By default only images that passed the
release's quality check (``Quality_check`` = P) and show the front (``Predicted_viewpoint`` = 0) are kept, the
paper's "quality-checked front views".
"""

from __future__ import annotations

import os
import re
from typing import Sequence

from mcjax.data.tables import csv_text, read_csv_columns
from mcjax.errors import InputError

IMAGE_TABLE, AD_TABLE, PRICE_TABLE = "Image_table.csv", "Ad_table (extra).csv", "Price_table.csv"
CATEGORICAL = ("brand", "model", "body_type", "colour")
NUMERICAL = ("year", "entry_price", "length", "width", "height", "doors", "seats", "engine_power", "mpg",
             "top_speed")
_AD_COLUMNS = {"body_type": "Bodytype", "length": "Length", "width": "Width", "height": "Height", "doors": "Door_num",
               "seats": "Seat_num", "engine_power": "Engine_power", "mpg": "Average_mpg", "top_speed": "Top_speed"}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _read_table(tables_dir: str, name: str, required: Sequence[str]) -> dict[str, list[str]]:
    """A release table with its column names stripped (the release writes `` Genmodel``)."""
    path = os.path.join(tables_dir, name)
    if not os.path.exists(path):
        raise InputError(f"DVM-Car table {name!r} not found in {tables_dir}.")
    columns = {name.strip(): values for name, values in read_csv_columns(path).items()}
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"DVM-Car table {path} lacks column(s) {missing}; it has {sorted(columns)}.")
    return columns


def number(text: str) -> str:
    """The first number in a cell ("45 mpg" → "45"), or "" when there is none."""
    match = _NUMBER.search(text or "")
    return match.group(0) if match else ""


def _rows(columns: dict[str, list[str]]):
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


def _first_values(ads: dict[str, list[str]]) -> dict[tuple[str, str, str], dict[str, str]]:
    """(maker, model, year) → each advert attribute's first non-empty value among that car's adverts."""
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    for ad in _rows(ads):
        values = found.setdefault((ad["Maker"].strip(), ad["Genmodel"].strip(), number(ad["Adv_year"])), {})
        for field, column in _AD_COLUMNS.items():
            value = ad[column].strip()
            value = value if field == "body_type" else number(value)
            if value and field not in values:
                values[field] = value
    return found


def prepare(tables_dir: str, viewpoints: Sequence[str] = ("0",), quality: Sequence[str] = ("P",)) -> str:
    """The generic image table (CSV text) of a DVM-Car release: an ``image`` column of paths relative to the image
    folder, then CATEGORICAL and NUMERICAL. ``viewpoints`` / ``quality`` filter the images (empty: keep all)."""
    images = _read_table(tables_dir, IMAGE_TABLE, ("Image_name", "Predicted_viewpoint", "Quality_check"))
    ads = _read_table(tables_dir, AD_TABLE, ("Maker", "Genmodel", "Adv_year", *_AD_COLUMNS.values()))
    prices = _read_table(tables_dir, PRICE_TABLE, ("Maker", "Genmodel", "Year", "Entry_price"))
    entry_price = {(p["Maker"].strip(), p["Genmodel"].strip(), number(p["Year"])): number(p["Entry_price"])
                   for p in _rows(prices)}
    ad_values = _first_values(ads)
    table = {name: [] for name in ("image", *CATEGORICAL, *NUMERICAL)}
    for image in _rows(images):
        if viewpoints and number(image["Predicted_viewpoint"]) not in viewpoints:
            continue
        if quality and image["Quality_check"].strip() not in quality:
            continue
        name = image["Image_name"].strip()
        parts = name.split("$$")
        if len(parts) < 5:
            raise InputError(f"DVM-Car image name {name!r} is not Brand$$Model$$Year$$Colour$$…; is this the "
                             f"release's {IMAGE_TABLE}?")
        brand, model, year, colour = (p.strip() for p in parts[:4])
        key = (brand, model, number(year))
        row = {"image": "/".join([*parts[:4], name]), "brand": brand, "model": model, "colour": colour,
               "year": number(year), "entry_price": entry_price.get(key, ""), **ad_values.get(key, {})}
        for column, values in table.items():
            values.append(row.get(column, ""))
    if not table["image"]:
        raise InputError(f"No image of {os.path.join(tables_dir, IMAGE_TABLE)} passes the filters (viewpoints "
                         f"{list(viewpoints)}, quality {list(quality)}).")
    return csv_text(table)
