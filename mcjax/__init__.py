"""mcjax: masked conditioning for deep generative models in JAX/Flax."""

from mcjax import distributed
from mcjax.conditions import ConditionEmbedding, Conditions, ConditionSpec, mask_conditions
from mcjax.data.tables import TableData, TableStats, load_table, prepare_table
from mcjax.evaluate import evaluate_runs
from mcjax.models.vae import MCVAE
from mcjax.sampling import generate, load_run
from mcjax.schedules import create_sparsity_schedule
from mcjax.search import run_search
from mcjax.train.experiment import train, train_and_evaluate
from mcjax.train.ldm_pipeline import train_first_stage_only, train_ldm

__all__ = [
    "ConditionEmbedding", "Conditions", "ConditionSpec", "MCVAE", "TableData", "TableStats",
    "create_sparsity_schedule", "evaluate_runs", "generate", "load_run", "load_table", "mask_conditions",
    "distributed", "prepare_table", "run_search", "train", "train_and_evaluate", "train_first_stage_only",
    "train_ldm",
]
