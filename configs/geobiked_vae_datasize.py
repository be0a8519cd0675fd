"""Paper Table 2 / Figure 2 (right): training-set size × constant training sparsity × seeds = 240 runs.

    python train.py --config configs/geobiked_vae_datasize.py --workdir runs/geobiked_vae_datasize

Sizes 10 … 3700 are nested subsets of the training split: a run trains on the first N rows of a seeded order of the
split (each seed draws its own order, so the seeds also average over which rows were drawn); the test split is the
same for every run. Epochs are counted over each run's own rows, as with the authors' code's data loader: an epoch is
max(1, N // 140) steps of min(140, N) rows, so every run makes the Table-1 393 passes over its data — a 10-row run
takes 393 steps, a 3700-row run 10,218. (Equal step counts instead would let a 10-row run memorise its rows for
10,218 steps.)

Runs with the same steps per epoch train as one vmapped program (a stage; sizes 10/50/100 form one, each larger size
one), and stages of equal shape reuse one compiled program: per-run subset sizes and step counts are data. Finished
stages are not retrained after an interruption. Writes results.json, results.md (Table 2 in the paper's layout under
both readings of its numbers, the paper's beside; mcjax.eval.paper) and mse_vs_dataset_size.png.

Runtime: 8.1 min on 2 CPU cores, about 1.5 of them evaluation (a sequential PyTorch loop trains the same runs in
54 min). Expected, mean over training sparsity 0.0 … 0.9 and 3 seeds, reading (a) (each model at inference sparsity
s = its training sparsity p) / (b) (each model's mean over s = 0.0 … 0.9): 0.143 / 0.171 at 10 rows, 0.100 / 0.126
at 100, 0.088 / 0.117 at 1000, 0.083 / 0.109 at 2000, 0.080 / 0.095 at 3700 (paper Table 2's mean column: 0.2398 at
10, 0.1217 at 100, 0.0998 at 1000, 0.0914 at 2000, 0.0939 at 3000). Training sparsity 0 scores 0.07–0.19 under (a)
and 0.22–0.40 under (b), where the model meets masked conditions it never saw. Details: docs/experiments.md.
"""

from mcjax.configs.geobiked_vae import get_config as base_config

SIZES = (10, 50, 100, 500, 1000, 2000, 3000, 3700)


def get_config():
    config = base_config("paper")
    config.sweep.train_sizes = SIZES
    config.sweep.train_sparsity = tuple(round(0.1 * i, 1) for i in range(10))
    config.sweep.seeds = (0, 1, 2)
    config.report.title = "mcVAE on GeoBiked: dataset size × training sparsity (paper Table 2)"
    config.report.paper = "table2"
    return config
