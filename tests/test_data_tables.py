import gzip

import numpy as np
import pytest

from mcjax.data import geobiked, tables


def _geobiked():
    return tables.load_table(geobiked.csv_path(), geobiked.KEYPOINT_COLUMNS, geobiked.CATEGORICAL_COLUMNS,
                             geobiked.NUMERICAL_COLUMNS, geobiked.NUMERICAL_NA_VALUES)


def test_embedded_geobiked_table():
    table = _geobiked()
    assert len(table) == 4355
    assert table.keypoints_NxD.shape == (4355, 26)
    assert np.isnan(table.numerical_NxJ).sum() == 2  # "Teeth on chainring" = 0 means unknown
    assert sorted(set(table.categories_NxK[:, 1])) == ["L", "M", "S", "XL", "XS"]


def test_split_is_seeded_85_15_and_covers_every_category():
    table = _geobiked()
    train, test = tables.split_indices(table, 0.15, seed=0)
    assert len(test) == round(0.15 * 4355) and len(train) + len(test) == 4355
    assert not set(train) & set(test)
    for k in range(table.categories_NxK.shape[1]):
        assert set(table.categories_NxK[train, k]) == set(table.categories_NxK[:, k])
    again, _ = tables.split_indices(table, 0.15, seed=0)
    other, _ = tables.split_indices(table, 0.15, seed=1)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_statistics_come_from_the_training_split_only():
    table = _geobiked()
    data = tables.prepare_table(table, 0.15, seed=0)
    train_mm = table.keypoints_NxD[data.train_rows]
    assert np.allclose(data.stats.keypoint_min, train_mm.min(0))
    assert np.allclose(data.train_x_NxD.min(0), 0) and np.allclose(data.train_x_NxD.max(0), 1)
    assert np.allclose(data.stats.denormalise(data.test_x_NxD), table.keypoints_NxD[data.test_rows])
    restored = tables.TableStats.from_json(data.stats.to_json())
    assert restored == data.stats


def test_validation_holdout_never_touches_the_test_rows():
    data = tables.prepare_table(_geobiked(), 0.15, seed=0)
    held = tables.holdout_validation(data, 0.2, seed=3)
    assert len(held.test_rows) == round(0.2 * len(data.train_rows))
    assert not set(held.test_rows) & set(data.test_rows) and not set(held.test_rows) & set(held.train_rows)
    assert sorted(np.concatenate([held.train_rows, held.test_rows])) == sorted(data.train_rows)
    assert held.stats == data.stats
    assert np.array_equal(held.test_rows, tables.holdout_validation(data, 0.2, seed=3).test_rows)
    with pytest.raises(ValueError, match="validation_fraction"):
        tables.holdout_validation(data, 1.5, seed=3)


def _write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


def _load(path):
    return tables.load_table(path, ["x_a", "y_a"], ["style"], ["teeth"])


def test_generic_csv_gz(tmp_path):
    path = _write(tmp_path, "x_a,y_a,style,teeth\n1,2,A,40\n3,4,B,\n", name="t.csv.gz")
    table = _load(path)
    assert table.keypoints_NxD.tolist() == [[1, 2], [3, 4]]
    assert table.categories_NxK[:, 0].tolist() == ["A", "B"]
    assert np.isnan(table.numerical_NxJ[1, 0])


@pytest.mark.parametrize("text,message", [
    ("x_a,style,teeth\n1,A,40\n", r"lacks column\(s\) \['y_a'\]"),
    ("x_a,y_a,style,teeth\n1,oops,A,40\n", r"column 'y_a', row 0: 'oops' is not a number"),
    ("x_a,y_a,style,teeth\n1,nan,A,40\n", r"column 'y_a', row 0: value 'nan' is missing or NaN"),
    ("x_a,y_a,style,teeth\n1,,A,40\n", r"column 'y_a', row 0: value '' is missing or NaN"),
    ("x_a,y_a,style,teeth\n1,2,A,forty\n", r"column 'teeth', row 0: 'forty' is not a number"),
    ("", "is empty"),
    ("x_a,y_a,style,teeth\n", "no rows"),
    ("x_a,y_a,style,teeth\n1,2,A\n", "3 cells, but the header has 4"),
])
def test_bad_tables_give_one_clear_error(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        _load(_write(tmp_path, text))


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="Table not found"):
        _load("/nonexistent/table.csv")


def test_unknown_category_at_inference(tmp_path):
    train = _load(_write(tmp_path, "x_a,y_a,style,teeth\n1,2,A,40\n3,4,B,50\n"))
    stats = tables.TableStats.fit(train)
    new = _load(_write(tmp_path, "x_a,y_a,style,teeth\n1,2,C,40\n", name="new.csv"))
    with pytest.raises(ValueError, match=r"'C' of condition 'style' was never seen in training.*\['A', 'B'\]"):
        stats.encode_conditions(new)


def test_missing_categorical_labels(tmp_path):
    """Empty cells and the listed NA values are missing labels: never a category, encoded as missing, counted."""
    text = "x_a,y_a,style,teeth\n1,2,A,40\n3,4,,50\n5,6,unknown,\n7,8,B,60\n9,1,NA,45\n"
    table = tables.load_table(_write(tmp_path, text), ["x_a", "y_a"], ["style"], ["teeth"],
                              categorical_na_values=("unknown", "NA"))
    assert table.categories_NxK[:, 0].tolist() == ["A", "", "", "B", ""]
    stats = tables.TableStats.fit(table)
    assert stats.conditions.vocabularies == (("A", "B"),)
    assert stats.encode_conditions(table).cat_BxK[:, 0].tolist() == [1, 0, 0, 2, 0]
    np.testing.assert_allclose(stats.label_rates, [0.4, 0.8])
    assert tables.TableStats.from_json(stats.to_json()) == stats
    assert stats.label_rate_text() == "labels given: style 40.0%, teeth 80.0%"
    train, _ = tables.split_indices(table, 0.4, seed=0)  # only observed values are pinned to training
    assert {"A", "B"} <= set(table.categories_NxK[train, 0])


def test_a_condition_without_any_label_is_an_error(tmp_path):
    path = _write(tmp_path, "x_a,y_a,style,teeth\n1,2,,40\n3,4,NA,50\n")
    with pytest.raises(ValueError, match=r"condition column\(s\) \['style'\] have no value in any row"):
        tables.load_table(path, ["x_a", "y_a"], ["style"], ["teeth"], categorical_na_values=("NA",))
    with pytest.raises(ValueError, match=r"\['teeth'\] have no value"):
        _load(_write(tmp_path, "x_a,y_a,style,teeth\n1,2,A,\n", name="u.csv"))
    only_in_test = _load(_write(tmp_path, "x_a,y_a,style,teeth\n1,2,A,\n3,4,B,50\n", name="v.csv"))
    with pytest.raises(ValueError, match=r"The training split: condition column\(s\) \['teeth'\]"):
        tables.TableStats.fit(only_in_test.take(np.array([0])))
