"""Where the full Table-1 run spends its time, process start → eval.json, phase by phase on the main thread.

    python benchmarks/run_profile.py                 # train.py --config configs/geobiked_vae.py:paper, cold cache
    python benchmarks/run_profile.py --stats run.prof   # the phases of a profile written before

Runs ``python -m cProfile train.py ...`` with a fresh compilation cache (the profiler slows Python-heavy phases such
as tracing; the unprofiled wall time of the same command is printed beside it) and sums the main thread's
cumulative time by phase. Work a background thread does (compiling while training runs) shows only as the main
thread's wait for it.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = (  # (phase, functions whose cumulative time it is: (file suffix, name))
    ("imports before main (mcjax.api, absl, JAX)", [("train.py", "<module>")]),
    ("data, run plan (prepare_experiment)", [("mcjax/train/sweep.py", "prepare_experiment")]),
    ("run directory, checkpoint manager", [("mcjax/run_dir.py", "start"), ("mcjax/run_dir.py", "checkpoint_manager")]),
    ("init: trace, compile, run (init_states)", [("mcjax/train/mcvae.py", "init_states")]),
    ("training loop: compile + chunks (loop.run)", [("mcjax/train/loop.py", "run")]),
    ("  of which imports overlapping chunk 1 (warm_up)", [("mcjax/train/sweep.py", "warm_up")]),
    ("  of which metric writes", [("mcjax/train/sweep.py", "_write_metrics")]),
    ("  of which checkpoints", [("mcjax/run_dir.py", "save_checkpoint")]),
    ("inference bundle (export)", [("mcjax/train/sweep.py", "export")]),
    ("evaluation: compile (or wait) + run", [("mcjax/train/sweep.py", "evaluate_stages")]),
    ("eval.json, results.md, plots", [("mcjax/eval/mcvae.py", "write_report"), ("mcjax/eval/report.py",
                                                                                 "write_results")]),
)


def phases(stats_file: str) -> list[tuple[str, float]]:
    stats = pstats.Stats(stats_file).stats
    cumulative = {}
    for (path, _, name), (_, _, _, cum, _) in stats.items():
        cumulative[(path, name)] = max(cumulative.get((path, name), 0.0), cum)
    found = []
    for phase, functions in PHASES:
        seconds = sum(c for (path, name), c in cumulative.items() for suffix, want in functions
                      if name == want and path.endswith(suffix))
        found.append((phase, seconds))
    total = found[0][1]
    main = sum(c for (path, name), c in cumulative.items() if name == "main" and path.endswith("train.py"))
    found[0] = (found[0][0], total - main)
    return [("total (profiled)", total), *found]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stats", help="analyse this cProfile output instead of running")
    parser.add_argument("--config", default="configs/geobiked_vae.py:paper")
    parser.add_argument("--root", default=ROOT, help="the checkout whose train.py runs (e.g. an older version's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stats = args.stats or os.path.join(tmp, "run.prof")
        if not args.stats:
            command = ["train.py", "--config", args.config, "--config.train.progress=False"]
            start = time.perf_counter()
            subprocess.run([sys.executable, *command, "--workdir", os.path.join(tmp, "plain"),
                            f"--config.compilation_cache_dir={tmp}/cache_plain"], cwd=args.root,
                           check=True, capture_output=True)
            print(f"{'unprofiled wall, cold cache':52s} {time.perf_counter() - start:7.2f} s")
            subprocess.run([sys.executable, "-m", "cProfile", "-o", stats, *command, "--workdir",
                            os.path.join(tmp, "profiled"), f"--config.compilation_cache_dir={tmp}/cache"],
                           cwd=args.root, check=True, capture_output=True)
        for phase, seconds in phases(stats):
            print(f"{phase:52s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
