"""mcVAE on the embedded GeoBiked table (Table 1 setting, constant training sparsity 0.5).

    python train.py --config configs/geobiked_vae.py --workdir runs/geobiked_vae

One run: 393 epochs × 26 steps of batch 140; evaluates on the 15 % test split at inference sparsity 0.0…0.9 and
writes runs/geobiked_vae/eval.json. Expected (README): MSE ≈ 0.067 at s = 0, ≈ 0.080 mean over levels.
Fields are documented in mcjax/configs/geobiked_vae.py; override any: --config.train.seed=3 --config.data.csv_path=…
"""

from mcjax.configs.geobiked_vae import get_config  # noqa: F401
