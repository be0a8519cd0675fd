"""mcjax: masked conditioning for deep generative models in JAX/Flax.

The names below are imported on first use (PEP 562), so that ``import mcjax.host_malloc`` stays light: an entry
point restarts itself with a faster allocator before JAX is loaded, and so imports it once, not twice.
(``mcjax.train`` is the subpackage; the mcVAE trainer is ``mcjax.train_and_evaluate``.)
"""

import importlib

_HOMES = {
    "ConditionEmbedding": "mcjax.conditions",
    "Conditions": "mcjax.conditions",
    "ConditionSpec": "mcjax.conditions",
    "mask_conditions": "mcjax.conditions",
    "TableData": "mcjax.data.tables",
    "TableStats": "mcjax.data.tables",
    "load_table": "mcjax.data.tables",
    "prepare_table": "mcjax.data.tables",
    "evaluate_runs": "mcjax.evaluate",
    "MCVAE": "mcjax.models.vae",
    "generate": "mcjax.sampling",
    "load_run": "mcjax.sampling",
    "create_sparsity_schedule": "mcjax.schedules",
    "run_search": "mcjax.search",
    "train_and_evaluate": "mcjax.train.experiment",
    "train_first_stage_only": "mcjax.train.ldm_pipeline",
    "train_ldm": "mcjax.train.ldm_pipeline",
}
_SUBMODULES = ("distributed",)

__all__ = sorted([*_HOMES, *_SUBMODULES])


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"mcjax.{name}")
    if name not in _HOMES:
        raise AttributeError(f"module 'mcjax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
