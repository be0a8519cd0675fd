"""The dataset-size experiment (paper Table 2) as one mcjax command vs a sequential PyTorch loop, in one invocation.

    python benchmarks/experiment_runtime.py                 # ≈ 15 min on 2 CPU cores
    python benchmarks/experiment_runtime.py --seeds 1 --levels 2
    python benchmarks/experiment_runtime.py --full          # every PyTorch run for real (≈ 1 h on 2 CPU cores)

mcjax: ``train.py --config configs/geobiked_vae_datasize.py`` from process start to results.md, with a fresh
compilation cache. PyTorch: the reference-shaped loop of tests/torch_vae.py (same epochs, batch min(140, N),
drop-last data loader). By default it trains one run per dataset size and the experiment's sequential time is
*estimated* as the sum over sizes times the number of (training sparsity, seed) pairs (a run's time does not depend
on its sparsity or seed; the report says how many runs were measured); ``--full`` trains every run. No XLA_FLAGS are
set by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.vae_throughput import timed_process  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--levels", type=int, default=10, help="training sparsity levels 0.0, 0.1, ...")
    parser.add_argument("--torch_device", default="cpu")
    parser.add_argument("--full", action="store_true", help="train every PyTorch run instead of one per size")
    args = parser.parse_args()

    from mcjax.configs.geobiked_vae_datasize import SIZES, get_config

    from mcjax.train.sweep import prepare_experiment
    from tests.torch_vae import train_torch

    config = get_config()
    config.sweep.train_sizes, config.sweep.train_sparsity, config.sweep.seeds = (), (), ()
    data = prepare_experiment(config)[0]
    runs_per_size = args.seeds * args.levels
    torch_per_size = {size: train_torch(config, data, train_size=size, device=args.torch_device)[2]
                      for size in SIZES}
    torch_total = runs_per_size * sum(torch_per_size.values())
    measured = len(SIZES)
    if args.full:
        for size in SIZES:
            for level in range(args.levels):
                config.sparsity.p_start = config.sparsity.p_end = 0.1 * level
                torch_total += sum(train_torch(config, data, seed=seed, train_size=size, device=args.torch_device)[2]
                                   for seed in range(args.seeds))
        torch_total -= runs_per_size * sum(torch_per_size.values())  # the full count replaces the estimate
        measured = runs_per_size * len(SIZES)

    levels = ",".join(f"{0.1 * i:.1f}" for i in range(args.levels))
    with tempfile.TemporaryDirectory() as tmp:
        mcjax_total, _ = timed_process([
            "train.py", "--config", "configs/geobiked_vae_datasize.py", "--workdir", os.path.join(tmp, "w"),
            f"--config.sweep.seeds=({','.join(str(s) for s in range(args.seeds))},)",
            f"--config.sweep.train_sparsity=({levels},)", "--config.train.progress=False",
            f"--config.compilation_cache_dir={os.path.join(tmp, 'cache')}"])
    report = {"machine": f"{os.cpu_count()} CPU cores", "runs": runs_per_size * len(SIZES),
              "torch_s_per_run_by_size": {k: round(v, 2) for k, v in torch_per_size.items()},
              "torch_runs_measured": measured, "torch_sequential": "measured" if args.full else
              f"estimated from {measured} measured runs", "torch_sequential_s": torch_total,
              "mcjax_s": mcjax_total, "speedup": torch_total / mcjax_total}
    for key, value in report.items():
        print(f"{key:26s} {value:.4g}" if isinstance(value, float) else f"{key:26s} {value}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
