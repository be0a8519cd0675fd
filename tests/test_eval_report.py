"""results.md beside the paper: the two readings of a mean MSE, Table 2 in the paper's layout, Table 3's settings."""

import json

import numpy as np
import pytest

from mcjax.eval import paper, report
from mcjax.train import sweep

LEVELS = [round(0.1 * i, 1) for i in range(10)]


def test_reading_a_of_a_tiny_sweep_equals_a_hand_computation_from_results_json(tiny_config, tmp_path):
    tiny_config.train.epochs = 2
    tiny_config.sweep.train_sparsity = (0.0, 0.5)
    tiny_config.sweep.seeds = (0, 1)
    sweep.train_and_evaluate(tiny_config, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    levels, rows = results["inference_sparsity"], results["rows"]

    by_hand = {seed: np.mean([r["mse"][levels.index(r["train_sparsity"])] for r in rows if r["seed"] == seed])
               for seed in (0, 1)}
    grid = paper.sparsity_grid(rows, levels, paper.mse_at_training_sparsity)
    assert paper.mean_over_training_sparsity(grid) == {512: pytest.approx(by_hand)}  # the tiny config's 512 rows
    at_half = np.asarray([r["mse"] for r in rows if r["train_sparsity"] == 0.5])

    markdown = (tmp_path / "results.md").read_text()
    values = np.asarray(list(by_hand.values()))
    assert f"mean over p | {values.mean():.4f} ± {values.std():.4f} | 0.0895 (the text, if read this way) |" in markdown
    assert f"at s = 0 | {at_half[:, 0].mean():.4f} ± {at_half[:, 0].std():.4f} | 0.0766" in markdown
    mean_over_s = at_half.mean(axis=1)
    assert f"mean over s | {mean_over_s.mean():.4f} ± {mean_over_s.std():.4f} | 0.0898 (Table 3)" in markdown


def _row(size, p, seed):
    """A results.json row whose MSE at level i is size + 10 p + seed / 10 + i / 100 (every cell tells its source)."""
    return {"schedule": f"constant:{p:g}", "seed": seed, "train_sparsity": p, "dataset_size": size,
            "mse": [size + 10 * p + seed / 10 + i / 100 for i in range(10)]}


def test_table2_has_the_papers_layout_under_both_readings_with_the_paper_beside():
    rows = [_row(size, p, seed) for size in (10, 50, 100) for p in (0.0, 0.2, 0.5) for seed in (0, 1)]
    header, rule, *body = report.table2_lines(rows, LEVELS)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in (header, *body)]
    assert cells[0] == ["training rows", "", "p = 0.0", "p = 0.2", "p = 0.4", "p = 0.6", "p = 0.8",
                        "mean over p = 0.0 … 0.5"]
    assert rule == "|---" * 8 + "|"
    assert [line[:2] for line in cells[1:]] == [
        ["10", "mcjax (a)"], ["10", "mcjax (b)"], ["10", "paper"], ["50", "mcjax (a)"], ["50", "mcjax (b)"],
        ["100", "mcjax (a)"], ["100", "mcjax (b)"], ["100", "paper"]]
    assert cells[3][2:] == ["0.3212", "0.2810", "0.2395", "0.2106", "0.1798", "0.2398"]
    assert cells[8][2:] == ["0.1201", "0.122", "0.1187", "0.122", "0.1239", "0.1217"]  # as printed
    # (a): the run trained at p scored at s = p (level 2 for p = 0.2); (b): its mean over the 10 levels
    assert cells[1][3] == "12.0700 ± 0.0500" and cells[2][3] == "12.0950 ± 0.0500"
    assert cells[1][4:7] == ["–", "–", "–"]
    mean_a = np.mean([10 + 0.00, 10 + 2 + 0.02, 10 + 5 + 0.05]) + 0.05  # over p, then seeds (0.0, 0.1 → 0.05)
    assert cells[1][7] == f"{mean_a:.4f} ± 0.0500"


def test_table3_rows_are_the_papers_settings():
    schedules = ("constant:0.5", "linear:0.5:0.6", "step:0.5:0.6:4", "reference_exponential:0.5:0.6",
                 "linear:0.6:0.5", "constant:0.6")
    rows = [{"schedule": s, "seed": 0, "mse": [float(i) + k / 100 for i in range(10)]} for k, s in enumerate(schedules)]
    lines = report.table3_lines(rows)
    first = next(i for i, line in enumerate(lines) if "the paper on GeoBiked" in line) + 4  # after blank, header, rule
    assert lines[first:first + 4] == ["| constant 0.5 | 0.0000 | 4.5000 | 0.0766 | 0.0898 |",
                        "| linear 0.5 → 0.6 | 0.0100 | 4.5100 | 0.0771 | 0.0896 |",
                        "| step 0.5 → 0.6 | 0.0200 | 4.5200 | 0.0775 | 0.0900 |",
                        "| exponential 0.5 → 0.6 | 0.0300 | 4.5300 | 0.0773 | 0.0895 |"]
    assert any("vehicles, a data set we do not have" in line for line in lines)
    assert "| linear 0.6 → 0.5 | 0.0400 | 4.5400 | 0.4317 | 0.5196 |" in lines
    assert "| step 0.6 → 0.5 | – | – | 0.4310 | 0.5202 |" in lines
