"""Experiment results beside the paper's: ``results.json`` (one row per run), ``results.md`` (mean ± std over seeds
per setting, the paper's numbers beside), plots, and the plain-text tables and figures every report uses.

Figures are ``matplotlib.figure.Figure`` objects saved to files: no pyplot, so no backend or other global state.

A *setting* is everything in a run's label except its seed; its runs are the seeds. ``config.report.paper`` names the
published numbers the experiment reproduces (``table1``: the text's, in the Table 1 setting; ``table2``; ``table3``;
or empty); ``mcjax.eval.paper`` holds them and the two readings that line our runs up with them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mcjax.eval import paper
from mcjax.io import atomic_write_text


def format_table(headers, rows, formats) -> str:
    """A plain-text table: right-aligned columns, each value through its format string."""
    cells = [[fmt.format(value) for fmt, value in zip(formats, row)] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [list(headers)] + cells)


def figure(width: float, height: float):
    """A matplotlib figure that belongs to no backend (imported on first use: ≈ 1 s)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def colours(count: int):
    """``count`` colours along viridis."""
    import matplotlib

    return matplotlib.colormaps["viridis"](np.linspace(0, 1, count))


def label_text(label: dict) -> str:
    """A run's or setting's label for tables and legends (a constant schedule is named by its sparsity alone)."""
    if "train_sparsity" in label:
        label = {k: v for k, v in label.items() if k != "schedule"}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in label.items()) or "default"


def _mean_std(values) -> str:
    """Mean ± std over seeds ("–" for none)."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return "–"
    return f"{values.mean():.4f} ± {values.std():.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _at_zero_and_mean(runs: list[dict]) -> tuple[str, str]:
    """Reading (b) of a setting's runs: MSE at s = 0 and mean over s, each mean ± std over seeds."""
    if not runs:
        return "–", "–"
    mse = np.asarray([row["mse"] for row in runs], np.float64)
    return _mean_std(mse[:, 0]), _mean_std(mse.mean(axis=1))


METRICS = ("mse", "mse_mean", "mse_many_z", "energy_score", "spread_ratio", "class_mean_error")  # of a run's row
GENERATOR_METRICS = ("energy_score", "spread_ratio", "class_mean_error")  # absent from rows of older runs


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per setting (in order of first appearance): its label, seeds and per-run metrics (lists)."""
    groups: dict[str, dict] = {}
    for row in rows:
        setting = {k: v for k, v in row.items() if k not in METRICS and k != "seed"}
        entry = groups.setdefault(json.dumps(setting), {"setting": setting, "seeds": []})
        entry["seeds"].append(row.get("seed"))
        for name in METRICS:
            if name in row:
                entry.setdefault(name, []).append(row[name])
    return list(groups.values())


def settings_table(groups: list[dict]) -> list[str]:
    """MSE at s = 0 and over s (both protocols) per setting, and the generator metrics where the runs have them."""
    extra = [name for name in GENERATOR_METRICS if all(name in g for g in groups)]
    titles = {"energy_score": "mean energy score", "spread_ratio": "spread ratio",
              "class_mean_error": "class-mean error"}
    header = ["setting", "runs", "MSE at s = 0", "mean MSE over s", "mean MSE, many z", *(titles[n] for n in extra)]
    lines = [_row(header), "|---" * len(header) + "|"]
    for g in groups:
        mse = np.asarray(g["mse"])
        cells = [label_text(g["setting"]), str(len(mse)), _mean_std(mse[:, 0]), _mean_std(mse.mean(axis=1)),
                 _mean_std(np.asarray(g["mse_many_z"]).mean(axis=1)),
                 *(_mean_std(np.asarray(g[name]).reshape(len(mse), -1).mean(axis=1)) for name in extra)]
        lines.append(_row(cells))
    return lines


def readings_table(rows: list[dict], levels) -> list[str]:
    """The text's GeoBiked numbers beside ours under both readings: (a) over the training sparsity levels (when the
    runs have more than one) and (b) for the model trained at constant sparsity 0.5 (when there is one)."""
    per_size = paper.mean_over_training_sparsity(paper.sparsity_grid(rows, levels, paper.mse_at_training_sparsity))
    trained = sorted({row["train_sparsity"] for row in rows if "train_sparsity" in row})
    half = paper.schedule_runs(rows, "constant", 0.5, 0.5)
    text, table3 = paper.PAPER_TEXT, paper.PAPER_TABLE3[0].mse["constant"]
    lines = [_row(["reading", "mcjax", "paper"]), "|---|---|---|"]
    if len(trained) > 1 and len(per_size) == 1:
        (per_seed,) = per_size.values()
        lines.append(_row([f"(a) one model per training sparsity p = {trained[0]:.1f} … {trained[-1]:.1f}, each at "
                           "s = p; mean over p", _mean_std(list(per_seed.values())),
                           f"{text['mse_mean']} (the text, if read this way)"]))
    if half:
        at_zero, mean = _at_zero_and_mean(half)
        lines += [_row(["(b) constant training sparsity 0.5, at s = 0", at_zero,
                        f"{text['mse_at_0']} (the text and Table 3)"]),
                  _row(["(b) constant training sparsity 0.5, mean over s", mean,
                        f"{table3[1]} (Table 3); {text['mse_mean']} (the text, if read this way)"])]
    return lines if len(lines) > 2 else []


def table2_lines(rows: list[dict], levels) -> list[str]:
    """Our Table 2 in the paper's layout — dataset size × training sparsity 0.0, 0.2, 0.4, 0.6, 0.8 and the mean over
    all our training levels — under both readings (mean ± std over seeds), the paper's row under ours of its size."""
    grids = {name: paper.sparsity_grid(rows, levels, reading) for name, reading in paper.READINGS.items()}
    if not grids["b"] or None in {size for size, _ in grids["b"]}:
        return []
    sizes = sorted({size for size, _ in grids["b"]})
    trained = sorted({p for _, p in grids["b"]})
    header = ["training rows", "", *(f"p = {p:.1f}" for p in paper.TABLE2_SPARSITY),
              f"mean over p = {trained[0]:.1f} … {trained[-1]:.1f}"]
    lines = [_row(header), "|---" * len(header) + "|"]
    means = {name: paper.mean_over_training_sparsity(grid) for name, grid in grids.items()}
    for size in sizes:
        for name, grid in grids.items():
            cells = [_mean_std(list(grid.get((size, p), {}).values())) for p in paper.TABLE2_SPARSITY]
            mean = _mean_std(list(means[name].get(size, {}).values()))
            lines.append(_row([str(size), f"mcjax ({name})", *cells, mean]))
        if size in paper.PAPER_TABLE2:
            lines.append(_row([str(size), "paper", *paper.PAPER_TABLE2[size]]))
    return lines


def table3_lines(rows: list[dict]) -> list[str]:
    """Each data set's half of Table 3 in its own setting, our GeoBiked runs of that setting beside (mean ± std over
    seeds): MSE at s = 0 and mean over s."""
    lines = []
    for table in paper.PAPER_TABLE3:
        setting = f"from {table.p_start:g} to {table.p_end:g}, constant at {table.constant:g}"
        header = ["schedule", "mcjax, s = 0", "mcjax, mean over s", "paper, s = 0", "paper, mean over s"]
        lines += [""] * bool(lines) + [f"Schedules {setting}; the paper on {table.data_set}:", "", _row(header),
                                       "|---" * 5 + "|"]
        for kind in paper.TABLE3_KINDS:
            start, end = (table.constant,) * 2 if kind == "constant" else (table.p_start, table.p_end)
            name = f"constant {start:g}" if kind == "constant" else f"{kind} {start:g} → {end:g}"
            lines.append(_row([name, *_at_zero_and_mean(paper.schedule_runs(rows, kind, start, end)),
                               *table.mse[kind]]))
    return lines


READINGS_TEXT = ("Two readings of a mean MSE: (a) one model per constant training sparsity p, scored at inference "
                 "sparsity s = p, mean over p; (b) one model scored at every s, mean over s (the table above).")
NOTES = {
    "table1": "The paper does not say which reading its text's mean uses (a model \"trained … on conditioning sparsity "
              "levels ranging from 0.0 to 0.9\", Figure 2); Table 3 is (b). docs/experiments.md weighs both.",
    "table2": "The paper's Table 2 has one column per training sparsity and a mean column (not the mean of the five "
              "columns it prints); it fits reading (a). Under (b) a model trained at p = 0 is scored on masked "
              "conditions it never saw in training; under (a) only at s = 0, as it was trained.",
    "table3": "Table 3 scores one model per schedule over every inference level: reading (b). The paper's two data "
              "sets differ in setting (GeoBiked increasing, vehicles decreasing); our runs of both settings are on "
              "GeoBiked.",
}


def markdown(summary: dict, groups: list[dict], paper_table: str, title: str) -> str:
    rows, levels = summary["runs"], summary["inference_sparsity"]
    lines = [f"# {title}", "",
             f"MSE: squared error summed over the normalised keypoint dims, mean over the test rows, at inference "
             f"sparsity {levels[0]:g} … {levels[-1]:g} (reference protocol: one prior draw of z shared by every test "
             f"row; many z: averaged over independent draws of z and masks). Mean ± std over seeds.", ""]
    lines += settings_table(groups)
    sections = {"table1": ("Beside the paper's text: both readings", lambda: readings_table(rows, levels)),
                "table2": ("Beside paper Table 2: dataset size × training sparsity, both readings",
                           lambda: table2_lines(rows, levels)),
                "table3": ("Beside paper Table 3: sparsity schedules", lambda: table3_lines(rows))}
    heading, build = sections.get(paper_table, ("", None))
    section = build() if build else []
    if section:
        lines += ["", f"## {heading}", "", READINGS_TEXT, "", *section, "", NOTES[paper_table]]
    return "\n".join(lines) + "\n"


def write_results(summary: dict, config, workdir: str) -> None:
    """``results.json`` (rows as in eval.json's ``runs``), ``results.md`` and the plots of the experiment."""
    paper_table = config.get("report", {}).get("paper", "")
    title = config.get("report", {}).get("title", "mcVAE results")
    atomic_write_text(os.path.join(workdir, "results.json"),
                      json.dumps({"inference_sparsity": summary["inference_sparsity"], "rows": summary["runs"]},
                                 indent=1))
    groups = aggregate(summary["runs"])
    atomic_write_text(os.path.join(workdir, "results.md"), markdown(summary, groups, paper_table, title))
    if len(groups) > 1:
        plot_settings(groups, summary["inference_sparsity"], os.path.join(workdir, "mse_by_setting.png"))
    if len({row["dataset_size"] for row in summary["runs"] if "train_sparsity" in row and "dataset_size" in row}) > 1:
        plot_datasize(summary["runs"], summary["inference_sparsity"], os.path.join(workdir, "mse_vs_dataset_size.png"))
    if len(groups) > 1 and all("spread_ratio" in g for g in groups):
        plot_tradeoff(groups, os.path.join(workdir, "tradeoff.png"))


def plot_settings(groups: list[dict], levels, path: str) -> None:
    """MSE vs inference sparsity, one line per training setting (mean over seeds)."""
    fig = figure(7, 4.5)
    ax = fig.subplots()
    for g, colour in zip(groups, colours(len(groups))):
        ax.plot(levels, np.asarray(g["mse"]).mean(axis=0), color=colour, lw=1.2,
                label=label_text(g["setting"]) if len(groups) <= 20 else None)
    ax.set_xlabel("inference sparsity")
    ax.set_ylabel("MSE (mean over seeds)")
    ax.grid(alpha=0.3)
    if len(groups) <= 20:
        ax.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_datasize(rows: list[dict], levels, path: str) -> None:
    """MSE vs dataset size (log x) under each reading: one line per Table 2 training sparsity and the mean over all our
    training levels (mean over seeds), the paper's Table 2 dashed in the same colours."""
    fig = figure(12, 4.5)
    axes = fig.subplots(1, 2, sharey=True)
    paper_sizes = list(paper.PAPER_TABLE2)
    for ax, (name, reading) in zip(axes, paper.READINGS.items()):
        grid = paper.sparsity_grid(rows, levels, reading)
        sizes = sorted({size for size, _ in grid})
        columns = [(f"p = {p:.1f}", [np.mean(list(grid[(n, p)].values())) if (n, p) in grid else np.nan for n in sizes])
                   for p in paper.TABLE2_SPARSITY]
        means = paper.mean_over_training_sparsity(grid)
        columns.append(("mean over p", [np.mean(list(means[n].values())) for n in sizes]))
        for column, ((label, ours), colour) in enumerate(zip(columns, [*colours(len(columns) - 1), "black"])):
            ax.plot(sizes, ours, marker="o", ms=3, color=colour, lw=1.2, label=f"mcjax, {label}")
            ax.plot(paper_sizes, [float(paper.PAPER_TABLE2[n][column]) for n in paper_sizes], "--", marker="s",
                    ms=3, color=colour, lw=1, label=f"paper, {label}")
        ax.set_xscale("log")
        ax.set_title(f"reading ({name}): " + ("each model at s = p" if name == "a" else "mean over s"), fontsize=9)
        ax.set_xlabel("training rows")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("MSE (mean over seeds)")
    axes[1].legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_tradeoff(groups: list[dict], path: str) -> None:
    """The paper's MSE, the energy score and the spread ratio against each other, one point per setting (mean over
    seeds): a regressor sits at low MSE and spread ≈ 0, a generator at spread ≈ 1 and the lowest energy score."""
    def mean(g, name):
        return float(np.mean(np.asarray(g[name]).reshape(len(g["mse"]), -1)))

    pairs = (("mse_mean", "energy_score"), ("mse_mean", "spread_ratio"), ("energy_score", "spread_ratio"))
    names = {"mse_mean": "mean MSE over s (reference protocol)", "energy_score": "mean energy score",
             "spread_ratio": "spread ratio (1 = as diverse as the data)"}
    fig = figure(15, 4.5)
    for ax, (x, y) in zip(fig.subplots(1, 3), pairs):
        for g, colour in zip(groups, colours(len(groups))):
            ax.scatter(mean(g, x), mean(g, y), color=colour, s=30, label=label_text(g["setting"]))
        ax.set_xlabel(names[x])
        ax.set_ylabel(names[y])
        ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
