"""How an mcLDM evaluation is shown: the printed table, the control plot and ``results.md`` beside the paper's Table 4.
"""

from __future__ import annotations

import os

from mcjax.eval import paper
from mcjax.eval.report import figure, format_table
from mcjax.io import atomic_write_text


def _cell(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def score_table(summary: dict) -> str:
    """Per level: inference sparsity, fraction of conditions given, MSE, SSIM, PSNR and, with a judge, condition
    accuracy on generated and real images and the Fréchet distance ("–" where not computed)."""
    headers = ["inference sparsity", "given", "MSE", "SSIM", "PSNR (dB)"]
    columns = [summary["inference_sparsity"], summary["conditions_given"], summary["mse"], summary["ssim"],
               summary["psnr"]]
    formats = ["{:.1f}", "{:.2f}", "{:.5f}", "{:.4f}", "{:.2f}"]
    for name, header in (("lpips", "LPIPS"), ("clip_similarity", "CLIP sim.")):
        if name in summary:
            headers.append(header)
            columns.append(summary[name])
            formats.append("{:.4f}")
    if "condition_accuracy" in summary:
        headers += ["cond. acc.", "real", "FD"]
        columns += [summary["condition_accuracy"], summary["condition_accuracy_real"], summary["fd"]]
        formats += ["{:.3f}", "{:.3f}", "{:.2f}"]
    rows = zip(*([_cell(v, f) for v in column] for column, f in zip(columns, formats)))
    return format_table(headers, rows, ["{}"] * len(headers))


def sweep_table(rows: list[dict]) -> str:
    """The guidance sweep: per scale and level, condition accuracy, FD and SSIM."""
    names = [n for n in ("condition_accuracy", "fd", "ssim") if n in rows[0]]
    formats = {"condition_accuracy": "{:.3f}", "fd": "{:.2f}", "ssim": "{:.4f}"}
    return format_table(["guidance", "inference sparsity", *names],
                        [[f"{r['guidance_scale']:g}", f"{r['inference_sparsity']:.1f}",
                          *(_cell(r[n], formats[n]) for n in names)] for r in rows], ["{}"] * (2 + len(names)))


def plot_control(summary: dict, path: str) -> None:
    """Condition accuracy (generated and real), SSIM and FD against inference sparsity."""
    levels = summary["inference_sparsity"]
    fig = figure(13, 3.8)
    axes = fig.subplots(1, 3)
    axes[0].plot(levels, summary["condition_accuracy"], marker="o", label="generated")
    axes[0].plot(levels, summary["condition_accuracy_real"], "--", marker="s", label="real test images (ceiling)")
    axes[0].set_ylabel("condition accuracy (given conditions)")
    axes[0].legend(fontsize=7)
    axes[1].plot(levels, summary["ssim"], marker="o")
    axes[1].set_ylabel("SSIM to the row's own image")
    fd = [(s, v) for s, v in zip(levels, summary["fd"]) if v is not None]
    axes[2].plot([s for s, _ in fd], [v for _, v in fd], marker="o")
    axes[2].set_ylabel("Fréchet distance (judge features)")
    for ax in axes:
        ax.set_xlabel("inference sparsity")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


TABLE4_COLUMNS = (("mse", "MSE ↓", "{:.4f}"), ("ssim", "SSIM ↑", "{:.4f}"), ("lpips", "LPIPS ↓", "{:.4f}"),
                  ("clip_similarity", "CLIP similarity ↑", "{:.4f}"), ("condition_accuracy", "condition accuracy ↑",
                                                                       "{:.3f}"), ("fd", "FD ↓", "{:.2f}"))


def _level_value(summary: dict, name: str, index: int, fmt: str) -> str:
    values = summary.get(name)
    return "–" if values is None or values[index] is None else fmt.format(values[index])


def results_markdown(summary: dict, config) -> str:
    """The paper's Table 4 row for ``eval.paper_table`` beside this run at each evaluated level, with the ceiling
    of condition accuracy (the judge on real images) and the FD floor, and what differs from the paper's run."""
    levels = summary["inference_sparsity"]
    lines = ["# mcLDM evaluation beside the paper's Table 4", "",
             "| | inference sparsity | " + " | ".join(h for _, h, _ in TABLE4_COLUMNS) + " |",
             "|---|---|" + "---|" * len(TABLE4_COLUMNS)]
    table = config.eval.get("paper_table", "")
    if table:
        row = paper.PAPER_TABLE4[table]
        lines.append(f"| paper, Table 4 ({table}) | | " + " | ".join(row.get(n, "–") for n, _, _ in TABLE4_COLUMNS)
                     + " |")
    for i, level in enumerate(levels):
        lines.append(f"| this run | {level:.1f} | " + " | ".join(_level_value(summary, n, i, f)
                                                                for n, _, f in TABLE4_COLUMNS) + " |")
    if "condition_accuracy_real" in summary:
        lines.append("| real test images (judge ceiling) | 0.0 | – | – | – | – | "
                     f"{_level_value(summary, 'condition_accuracy_real', 0, '{:.3f}')} | "
                     + (f"{summary['fd_reference']['fd']:.2f} |" if "fd_reference" in summary else "– |"))
    lines += ["", f"Rows: {summary['num_rows']} test rows per level"
              + (f"; FD on {next(n for n in summary['fd_num_images'] if n)} images" if "fd_reference" in summary
                 else "") + ". " + _what_differs(config, table), ""]
    if "guidance_sweep" in summary:
        lines += ["## Guidance scale", "", "```", sweep_table(summary["guidance_sweep"]), "```", ""]
    missing = [h for n, h, _ in TABLE4_COLUMNS[2:4] if n not in summary]
    if missing:
        lines += [f"{' and '.join(missing)}: not computed (name the weight files in eval.lpips_backbone / "
                  f"eval.clip_weights; docs/mcldm.md).", ""]
    return "\n".join(lines)


def _what_differs(config, table: str) -> str:
    size = int(config.data.image_size)
    images = ("rendered bikes" if not (config.data.get("image_dir") or config.data.get("image_column"))
              else "images from " + str(config.data.image_dir))
    first = f"the SD 2.1 VAE ({config.first_stage.pretrained})" if config.first_stage.pretrained \
        else "an autoencoder trained here"
    ours = f"This run: {images} at {size} px through {first}, {int(config.train.steps):,} U-Net steps"
    if not table:
        return ours + "."
    lpips = f"LPIPS by {config.eval.get('lpips_net', 'alex')}" if config.eval.get("lpips_backbone") else ""
    return (f"{ours}{'; ' + lpips if lpips else ''}. The paper: {paper.PAPER_TABLE4_SETTING[table]}; its table gives "
            f"no condition accuracy or FD (mcjax's judge), and not which LPIPS network or CLIP model it used.")


def write_results(summary: dict, config, workdir: str) -> str:
    path = os.path.join(workdir, "results.md")
    atomic_write_text(path, results_markdown(summary, config))
    return path
