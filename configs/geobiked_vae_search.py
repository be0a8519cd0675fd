"""Hyperparameter search over the paper's Table-1 space: 128 TPE trials in batches of 32, then a 3 × 3 grid around the
best, then the best configuration retrained with 5 seeds and evaluated on the test split.

    pip install -e ".[search]"   # Optuna
    python train.py --config configs/geobiked_vae_search.py --workdir runs/geobiked_vae_search

The paper ran 1,000 Optuna TPE trials and then a 900-configuration grid; this is the same procedure at a size that
runs on a laptop (override search.num_trials / search.grid). Every batch of trials trains as width-masked networks in
as few programs as there are batch sizes; trials are scored on a validation part (15 %) of the training split so the
test split stays untouched until the final evaluation. Interrupted searches resume from W/study.db and the batch's
checkpoints. Several machines: start one worker per machine with the same config and
--config.search.storage=postgresql://... (README, "Searching on several machines").

Runtime: 18 min on 2 CPU cores. Expected: best validation objective ≈ 0.071; the best configuration's test MSE over
5 seeds ≈ 0.065 at s = 0 and ≈ 0.079 mean (the paper's text: 0.0766 / 0.0895). Details: docs/experiments.md.
"""

from mcjax.configs.geobiked_vae import get_config as base_config
from ml_collections import config_dict


def get_config():
    config = base_config("paper")
    config.job = "search"
    config.train.progress = False
    config.train.tensorboard = False
    config.search = config_dict.ConfigDict(dict(
        num_trials=128,
        trials_per_batch=32,  # asked together (TPE with constant liar) and trained as one experiment
        startup_trials=32,  # random trials before TPE takes over
        seed=0,  # the sampler's seed
        objective="mse_many_z_mean",  # mse_many_z_mean (robust) | mse_mean (one shared z, the paper's)
        validation_fraction=0.15,  # trials are scored on this part of the training split
        space=config_dict.ConfigDict(dict(  # "int:LOW:HIGH[:log]" | "float:LOW:HIGH[:log]" | "choice:A,B,..."
            keypoint_embedding_dim="int:16:256:log",
            condition_embedding_dim="int:2:24:log",
            hidden_0="int:32:192:log",  # hidden_i → model.hidden_dims[i]; the decoder mirrors them
            hidden_1="int:16:128:log",
            hidden_2="int:8:64:log",
            latent_dim="int:2:24",
            beta="float:0.05:2.0:log",
            learning_rate="float:1e-4:1e-2:log",
            batch_size="choice:70,140,280",
            epochs="int:100:500",
            train_sparsity="float:0.0:0.9",
        )),
        grid=config_dict.ConfigDict(dict(  # refinement: factors around the best trial's values ({} = none)
            learning_rate=(0.5, 1.0, 2.0),
            beta=(0.5, 1.0, 2.0),
        )),
        final_seeds=(0, 1, 2, 3, 4),
        # Where the Optuna study lives; "" = sqlite:///W/study.db (one worker). Shared by any number of workers:
        # postgresql://user:pw@host/db, mysql+pymysql://..., sqlite:///shared/study.db, journal:///shared/study.log.
        storage="",
        study_name="mcjax",  # one storage can hold several searches under different names
        heartbeat_s=30.0,  # workers beat this often; one silent for 5 beats has its running trials retried
    ))
    return config
