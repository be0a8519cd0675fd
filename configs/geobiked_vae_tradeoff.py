"""The mcVAE between the paper's MSE and a generator: prior (standard | conditional) × beta × 5 seeds = 40 runs, one
vmapped program per prior.

    python train.py --config configs/geobiked_vae_tradeoff.py --workdir runs/geobiked_vae_tradeoff

results.md gives, per setting (mean ± std over seeds), the MSE of both protocols, the energy score, the spread ratio
and the class-mean error (mcjax.eval.mcvae); tradeoff.png draws them against each other. The fixed N(0, I) prior is a
regressor at the betas that reach the paper's MSE and ignores its conditions where it is diverse; the conditional prior
at beta 0.01 (configs/geobiked_vae.py:generator) is diverse and follows its conditions, at a higher MSE.
"""

from mcjax.configs.geobiked_vae import get_config as base_config

PRIORS = ("standard", "conditional")
BETAS = (0.7, 0.1, 0.03, 0.01)


def get_config():
    config = base_config("paper")
    config.sweep.runs = tuple({"prior": prior, "beta": beta} for prior in PRIORS for beta in BETAS)
    config.sweep.seeds = (0, 1, 2, 3, 4)
    config.report.title = "mcVAE on GeoBiked: prior × beta, MSE against being a generator"
    return config
