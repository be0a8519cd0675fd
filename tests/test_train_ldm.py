"""mcLDM training: learning on a few rendered bikes, and data parallelism."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from mcjax.configs.geobiked_vae import get_config

from mcjax import diffusion, schedules
from mcjax.conditions import Conditions
from mcjax.data import render, tables
from mcjax.models.unet import ConditionalUNet
from mcjax.models.unet_reference import ReferenceUNet
from mcjax.train import ldm


def tiny_setup(num_bikes: int = 16, size: int = 16, total_steps: int = 100, batch_size: int = 8,
               layout: str = "mcjax"):
    """Rendered bikes in [-1, 1] with their encoded conditions, and a tiny trainer (U-Net ``layout``) for them."""
    table = tables.table_from_config(get_config().data).take(np.arange(num_bikes))
    stats = tables.TableStats.fit(table)
    images = render.render(render.geometry_from_table(table), size).astype(np.float32) / 127.5 - 1.0
    data = ldm.LDMData(jnp.asarray(images), jax.tree.map(jnp.asarray, stats.encode_conditions(table)))
    spec = stats.conditions
    fields = dict(num_categories=spec.num_categories, num_numerical=len(spec.numerical_names), out_channels=3,
                  base_channels=16, blocks_per_level=1, attention_levels=(1,), num_heads=2, head_dim=8, dropout=0.0,
                  time_embedding_dim=16, condition_embedding_dim=4, condition_channels=4)
    model = (ConditionalUNet(channel_multipliers=(1, 2), **fields) if layout == "mcjax"
             else ReferenceUNet(levels=2, **fields))
    sparsity = get_config().sparsity
    sparsity.update(dict(kind="linear", p_start=0.1, p_end=0.25))  # the paper's mcLDM schedule
    trainer = ldm.LDMTrainer(model, diffusion.make_noise_schedule("linear", 100), optax.adamw(2e-3),
                             schedules.schedule_params(sparsity), total_steps, batch_size, ema_decay=0.9)
    return trainer, data


@pytest.mark.parametrize("layout", ["mcjax", pytest.param("reference", marks=pytest.mark.slow)])  # ≈ 23 s each
def test_tiny_model_learns_on_rendered_bikes(layout):
    trainer, data = tiny_setup(layout=layout)
    mesh = ldm.data_mesh(jax.devices()[:1])
    key = jax.random.key(0, impl="rbg")
    state = ldm.replicate(ldm.init_state(trainer, key, data), mesh)
    step = ldm.compiled_train_steps(trainer, 1, mesh)  # a host loop of single steps: the fast program on CPUs
    replicated, history = ldm.replicate(data, mesh), []
    for _ in range(100):
        state, metrics = step(state, replicated, key)
        history.append(metrics)
    losses = np.concatenate([np.asarray(m["loss"]) for m in history])
    assert np.all(np.isfinite(losses)) and int(state.step) == 100
    assert losses[-20:].mean() < 0.5 * losses[:10].mean(), (losses[:10].mean(), losses[-20:].mean())
    np.testing.assert_allclose(np.asarray(history[-1]["sparsity"])[0], 0.1 + 0.15 * 99 / 100, rtol=1e-5)


@pytest.mark.slow  # ≈ 30 s of compilation on 2 cores; run with -m slow
def test_scanned_steps_equal_single_steps():
    trainer, data = tiny_setup(num_bikes=8, total_steps=3)
    trainer = trainer._replace(optimizer=optax.sgd(0.05))  # Adam would magnify rounding differences of fusion
    mesh = ldm.data_mesh(jax.devices()[:1])
    key = jax.random.key(1, impl="rbg")
    replicated = ldm.replicate(data, mesh)
    start = ldm.replicate(ldm.init_state(trainer, key, data), mesh)  # donated below
    scanned, scanned_metrics = ldm.compiled_train_steps(trainer, 3, mesh)(start, replicated, key)
    single, losses = ldm.replicate(ldm.init_state(trainer, key, data), mesh), []
    for _ in range(3):
        single, metrics = ldm.compiled_train_steps(trainer, 1, mesh)(single, replicated, key)
        losses.append(float(metrics["loss"][0]))
    np.testing.assert_allclose(np.asarray(scanned_metrics["loss"]), losses, rtol=1e-4)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(single)):  # float32 reassociation across fusions
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=5e-5)


_PARALLEL = """
import jax, numpy as np, optax
from tests.test_train_ldm import tiny_setup
from mcjax.train import ldm
assert jax.device_count() == 4
trainer, data = tiny_setup(total_steps=6)
# Plain SGD: Adam would turn float-reassociation noise in near-zero gradients into whole steps.
trainer = trainer._replace(optimizer=optax.sgd(0.05))
key = jax.random.key(0, impl="rbg")
results = []
for devices in (jax.devices()[:1], jax.devices()):
    mesh = ldm.data_mesh(devices)
    state = ldm.replicate(ldm.init_state(trainer, key, data), mesh)
    state, metrics = ldm.compiled_train_steps(trainer, 6, mesh)(state, ldm.replicate(data, mesh), key)
    results.append((np.asarray(metrics["loss"]), [np.asarray(a) for a in jax.tree.leaves(state.params)]))
np.testing.assert_allclose(results[0][0], results[1][0], rtol=2e-4, atol=1e-6)
for one, four in zip(results[0][1], results[1][1]):
    np.testing.assert_allclose(one, four, rtol=1e-3, atol=1e-5)
print("ok", results[0][0])
"""


@pytest.mark.slow  # ≈ 42 s of compilation in a subprocess; the mcVAE's 4-device test stays in the default suite
def test_data_parallel_on_four_cpu_devices_equals_one(four_device_environment):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**four_device_environment, "PYTHONPATH": root}
    result = subprocess.run([sys.executable, "-c", _PARALLEL], capture_output=True, text=True, env=env, cwd=root,
                            timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


_PROCESS = """
import os, sys
from mcjax import runtime
assert runtime.initialize_distributed()  # from MCJAX_* environment variables
import jax, numpy as np, optax
from tests.test_train_ldm import tiny_setup
from mcjax.train import ldm
assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
trainer, data = tiny_setup(total_steps=4)
trainer = trainer._replace(optimizer=optax.sgd(0.05))
key = jax.random.key(0, impl="rbg")
mesh = ldm.data_mesh()
state = ldm.replicate(ldm.init_state(trainer, key, data), mesh)
state, metrics = ldm.compiled_train_steps(trainer, 4, mesh)(state, ldm.replicate(data, mesh), key)
print("LOSSES", *np.asarray(metrics["loss"].addressable_data(0)).tolist())
"""


@pytest.mark.slow  # ≈ 60 s of two processes compiling on 2 cores; run with -m slow
def test_two_processes_train_like_one():
    """Two local CPU processes (gloo collectives), one device each, against one process with one device: the same
    global batch of 8, the same losses."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root, "MCJAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "MCJAX_NUM_PROCESSES": "2"}
    workers = [subprocess.Popen([sys.executable, "-c", _PROCESS], env={**env, "MCJAX_PROCESS_ID": str(i)}, cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    losses = [np.array([float(v) for v in out.split("LOSSES")[1].split()]) for out, _ in outputs]

    trainer, data = tiny_setup(total_steps=4)
    trainer = trainer._replace(optimizer=optax.sgd(0.05))
    key = jax.random.key(0, impl="rbg")
    mesh = ldm.data_mesh(jax.devices()[:1])
    state = ldm.replicate(ldm.init_state(trainer, key, data), mesh)
    _, metrics = ldm.compiled_train_steps(trainer, 4, mesh)(state, ldm.replicate(data, mesh), key)
    for process_losses in losses:
        np.testing.assert_allclose(process_losses, np.asarray(metrics["loss"]), rtol=2e-4)


def _train_config(steps_per_chunk: int):
    """The blocks of a config ``ldm.train_unet`` reads: checkpoints and milestones every 2 steps."""
    import ml_collections

    return ml_collections.ConfigDict(dict(
        train=dict(steps_per_chunk=steps_per_chunk, log_every_steps=1, checkpoint_every_steps=2, tensorboard=False,
                   progress=False), eval=dict(every_steps=2)))


def _host_set(data: ldm.LDMData, path) -> ldm.StreamedData:
    """``data`` as a host set: its latents shuffled among other rows of a memory-mapped file, as ``W/latents.npy``."""
    x0 = np.asarray(data.x0_NxHxWxC)
    order = np.random.default_rng(0).permutation(2 * len(x0))  # file row order[i] holds set row i (or a decoy)
    stored = np.full((2 * len(x0),) + x0.shape[1:], 9.0, np.float32)
    stored[order[:len(x0)]] = x0
    np.save(path, stored)
    return ldm.StreamedData(np.load(path, mmap_mode="r"), order[:len(x0)], jax.tree.map(np.asarray, data.conditions))


class _Stub(nn.Module):
    """The U-Net's interface (with batch statistics) at a fraction of its compile time, for tests of the data path."""

    @nn.compact
    def __call__(self, x_BxHxWxC, t_B, conditions, train: bool = False):
        c = x_BxHxWxC.shape[-1]
        y_BxD = jnp.concatenate([conditions.cat_BxK.astype(jnp.float32), jnp.nan_to_num(conditions.num_BxJ)], -1)
        h = nn.Conv(c, (3, 3))(x_BxHxWxC) + (nn.Embed(1000, c)(t_B) + nn.Dense(c)(y_BxD))[:, None, None]
        return nn.BatchNorm(use_running_average=not train)(h)


def _stub_setup():
    """``tiny_setup``'s 8 bikes, 3 steps of 4, with the stub model."""
    trainer, data = tiny_setup(num_bikes=8, total_steps=3, batch_size=4)
    return trainer._replace(model=_Stub()), data


def _params(state) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(state.params)]


class _Stop(Exception):
    pass


def test_streamed_training_equals_resident_training_bit_for_bit(tmp_path):
    """Three steps resident in chunks of 2 + 1; streamed from a memory map in a chunk of 2, stopped after the
    checkpoint at step 2 and resumed from it in a chunk of 1: the same parameters to the bit at steps 2 and 3."""
    trainer, data = _stub_setup()
    key, at_step_2 = jax.random.key(3, impl="rbg"), []

    def stop(step, state):
        at_step_2.append(_params(state))
        raise _Stop  # as if stopped after the checkpoint

    keep = lambda step, state: at_step_2.append(_params(state))  # noqa: E731
    resident = _params(ldm.train_unet(_train_config(2), str(tmp_path / "resident"), trainer, data, key, keep))
    host = _host_set(data, tmp_path / "latents.npy")
    with pytest.raises(_Stop):
        ldm.train_unet(_train_config(2), str(tmp_path / "streamed"), trainer, host, key, stop)
    resumed = _params(ldm.train_unet(_train_config(2), str(tmp_path / "streamed"), trainer, host, key))
    assert len(resident) > 1
    for a, b, c, d in zip(at_step_2[0], at_step_2[1], resident, resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, d)


@pytest.mark.slow  # ≈ 60 s on 2 busy cores (two U-Net step programs); run with -m slow
def test_a_streamed_unet_step_equals_a_resident_step_bit_for_bit(tmp_path):
    """The same with a (one-level) U-Net, one step of each chunk program from one state."""
    trainer, data = _stub_setup()
    trainer = trainer._replace(model=tiny_setup()[0].model.clone(channel_multipliers=(1,), attention_levels=()))
    key, mesh = jax.random.key(3, impl="rbg"), ldm.data_mesh(jax.devices()[:1])
    init = jax.jit(lambda k: ldm.init_state(trainer, k, data)._replace(step=jnp.int32(1)))
    resident = ldm.resident_chunk(trainer, ldm.replicate(data, mesh), key, mesh)
    streamed = ldm.streamed_chunk(trainer, _host_set(data, tmp_path / "latents.npy"), key, mesh, chunk_size=1)
    (one, one_metrics), (two, two_metrics) = (chunk(ldm.replicate(init(key), mesh), 1, 1)
                                              for chunk in (resident, streamed))
    assert int(two.step) == 2 and float(one_metrics["loss"][0]) == float(two_metrics["loss"][0])
    for a, b in zip(_params(one), _params(two)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_rows_computed_on_the_host_are_the_rows_train_step_draws(impl, tmp_path):
    key, batch_size, num_rows = jax.random.key(5, impl=impl), 6, 11
    rows_SxB = np.asarray(ldm.rows_of_steps(key, 7, 3, batch_size, num_rows))  # steps 7, 8, 9
    drawn = jax.jit(lambda step: ldm.batch_rows(key, step, batch_size, num_rows))  # as inside train_step
    spelled_out = [jax.random.randint(jax.random.split(jax.random.fold_in(key, s))[0], (batch_size,), 0, num_rows)
                   for s in range(7, 10)]  # the draw as the module docstring states it
    for index, step in enumerate(range(7, 10)):
        np.testing.assert_array_equal(rows_SxB[index], drawn(jnp.int32(step)))
        np.testing.assert_array_equal(rows_SxB[index], spelled_out[index])
    data = ldm.LDMData(np.arange(num_rows * 8, dtype=np.float32).reshape(num_rows, 2, 2, 2),
                       Conditions(np.arange(num_rows * 2, dtype=np.int32).reshape(num_rows, 2),
                                  np.linspace(0, 1, num_rows, dtype=np.float32)[:, None]))
    block = ldm.gather_block(_host_set(data, tmp_path / "latents.npy"), rows_SxB)
    for got, want in zip(jax.tree.leaves(block), jax.tree.leaves(data)):
        np.testing.assert_array_equal(got, want[rows_SxB])
