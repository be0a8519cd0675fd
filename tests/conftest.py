"""The tests' XLA setting, and shared fixtures: a tiny config derived from the real default, a session-wide compilation
cache."""

import os

import pytest

from mcjax import runtime

# Tests run their programs for a few steps: XLA's backend optimisation (LLVM) costs more compile time than it saves
# (the tiny mcLDM pipeline: 122 s → 92 s). Set before JAX starts; the command-line tests' processes inherit it.
runtime.add_xla_flags("--xla_backend_optimization_level=0")


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla_cache"))


@pytest.fixture(scope="session", autouse=True)
def _persistent_compilation_cache(compilation_cache):
    """JAX's compilation cache for the test process too, as ``train.py`` has: tests that build the same program again
    (a resumed run, the same tiny config) load it instead of compiling it anew."""
    runtime.enable_compilation_cache(compilation_cache)


@pytest.fixture
def four_device_environment():
    """The environment of a subprocess with 4 CPU devices that compiles with this process's XLA flags."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


@pytest.fixture
def tiny_config(compilation_cache):
    """configs/geobiked_vae.py:paper shrunk to train in about a second: small widths, 512 rows, few epochs."""
    from mcjax.configs.geobiked_vae import get_config

    config = get_config("paper")
    config.data.train_size = 512
    config.model.keypoint_embedding_dim = 32
    config.model.condition_embedding_dim = 4
    config.model.hidden_dims = (32, 16)
    config.model.latent_dim = 4
    config.train.batch_size = 64
    config.train.epochs = 6
    config.train.epochs_per_chunk = 2
    config.train.checkpoint_every_epochs = 2
    config.train.progress = False
    config.train.tensorboard = False
    config.eval.num_draws = 2
    config.eval.energy_draws = 4
    config.eval.class_samples = 32
    config.compilation_cache_dir = compilation_cache
    return config

