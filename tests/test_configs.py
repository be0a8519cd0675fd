"""Every config: loads without JAX, names a job, and agrees with the library's defaults where it restates them."""

import importlib
import pkgutil
import subprocess
import sys

import mcjax.configs
import pytest

CONFIGS = sorted(m.name for m in pkgutil.iter_modules(mcjax.configs.__path__))
PRESETS = {"geobiked_vae": ("generator", "paper"), "geobiked_ldm": ("default", "smoke", "paper"),
           "image_folder_ldm": ("default", "smoke"), "dvm_ldm": ("default", "smoke"),
           "geobiked_first_stage": ("default", "smoke", "paper"),
           "geobiked_vae_schedules": ("paper", "reference")}


def _configs():
    for name in CONFIGS:
        module = importlib.import_module(f"mcjax.configs.{name}")
        for preset in PRESETS.get(name, (None,)):
            yield name, preset, module.get_config() if preset is None else module.get_config(preset)


def test_every_config_loads_without_jax():
    probe = ("import sys, pkgutil, importlib, mcjax.configs\n"
             "for m in pkgutil.iter_modules(mcjax.configs.__path__):\n"
             "    importlib.import_module('mcjax.configs.' + m.name).get_config()\n"
             "print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert len(CONFIGS) == 11


@pytest.mark.parametrize("name,preset,config", list(_configs()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_config_names_a_job_and_a_valid_schedule(name, preset, config):
    import mcjax.api as mc
    from mcjax.schedules import schedule_params

    assert config.job in mc.JOBS
    if config.job != "first_stage":  # the first stage is trained without conditions
        schedule_params(config.sparsity)  # validates
    if config.job == "ldm":
        from mcjax.models.ldm import SamplerSettings

        SamplerSettings.from_config(config.eval)


def test_the_ldm_config_samples_as_the_library_does_by_default():
    from mcjax.configs.geobiked_ldm import get_config

    from mcjax.models.ldm import SamplerSettings

    assert SamplerSettings.from_config(get_config().eval) == SamplerSettings()
