"""Training sparsity sweep: the 10 constant levels 0.0…0.9 × 5 seeds = 50 runs as one vmapped program.

    python train.py --config configs/geobiked_vae_sweep.py --workdir runs/geobiked_vae_sweep

eval.json holds the mean over all runs and one row per run (schedule, seed, MSE per inference sparsity);
mse_vs_sparsity.png draws one line per run. Runtime: 209–247 s on 2 CPU cores (the runs split over both), 35 s on
one H200. Expected: MSE at inference sparsity 0 ≈ 0.069 (mean over runs); training at sparsity 0.0 gives the worst
results at high inference sparsity.
"""

from mcjax.configs.geobiked_vae import get_config as base_config


def get_config():
    config = base_config("paper")
    config.sweep.train_sparsity = tuple(round(0.1 * i, 1) for i in range(10))
    config.sweep.seeds = (0, 1, 2, 3, 4)
    return config
