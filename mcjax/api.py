"""The research API: the names a notebook or script needs, imported eagerly.

    import mcjax.api as mc
    summary = mc.train_and_evaluate(config, "runs/x")      # or mc.run_job: the job named by config.job
    run = mc.load_run("runs/x")
    designs = mc.generate(run, {"BikeStyle": "BMX"}, 8, jax.random.key(0))

Nothing here changes a process-wide setting (XLA flags, allocator, compilation cache, plotting backend): those are
``mcjax.runtime``'s, made by the entry points.
"""

from mcjax.conditions import Conditions, ConditionSpec, mask_conditions
from mcjax.data.tables import TableData, TableStats, load_table, prepare_table
from mcjax.errors import InputError
from mcjax.eval.mcvae import evaluate_runs
from mcjax.generate.ldm import generate as generate_images
from mcjax.generate.ldm import load_ldm_run
from mcjax.generate.mcvae import generate, load_run
from mcjax.models.autoencoder_kl import AutoencoderKL
from mcjax.models.embedding import ConditionEmbedding
from mcjax.models.mcvae import MCVAE
from mcjax.models.unet import ConditionalUNet
from mcjax.models.unet_reference import ReferenceUNet
from mcjax.schedules import create_sparsity_schedule
from mcjax.train.export import export_run
from mcjax.train.ldm_pipeline import train_first_stage, train_ldm
from mcjax.train.search import run_search
from mcjax.train.sweep import train_and_evaluate

JOBS = {"mcvae": train_and_evaluate, "search": run_search, "ldm": train_ldm, "first_stage": train_first_stage}


def run_job(config, workdir: str) -> dict:
    """Runs the job ``config.job`` names (mcvae | search | ldm | first_stage) into ``workdir``; returns its summary."""
    job = config.get("job", "")
    if job not in JOBS:
        raise InputError(f"Unknown config.job {job!r}; choose from {sorted(JOBS)}.")
    return JOBS[job](config, workdir)


__all__ = ["AutoencoderKL", "ConditionEmbedding", "ConditionSpec", "ConditionalUNet", "Conditions", "InputError",
           "JOBS", "MCVAE", "ReferenceUNet", "TableData", "TableStats", "create_sparsity_schedule", "evaluate_runs",
           "export_run", "generate", "generate_images", "load_ldm_run", "load_run", "load_table", "mask_conditions",
           "prepare_table", "run_job", "run_search", "train_and_evaluate", "train_first_stage", "train_ldm"]
