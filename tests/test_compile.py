"""mcjax.compile: the options the training loop compiles with, and that they leave its results alone."""

import jax
import jax.numpy as jnp
import numpy as np

from mcjax.compile import compile_loop


class _Lowered:
    def compile(self, compiler_options=None):
        return compiler_options


def test_loop_compiles_at_level_1_on_cpus_unless_xla_flags_set_a_level(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert compile_loop(_Lowered()) == {"xla_backend_optimization_level": "1"}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert compile_loop(_Lowered()) is None


def test_loop_compiled_at_level_1_computes_what_the_default_level_does(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")

    def loop(w, x):
        return jax.lax.fori_loop(0, 20, lambda i, w: w - 0.1 * jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w), w)

    w, x = jax.random.normal(jax.random.key(0), (16, 8)), jax.random.normal(jax.random.key(1), (32, 16))
    lowered = jax.jit(loop).lower(w, x)
    np.testing.assert_array_equal(compile_loop(lowered)(w, x), lowered.compile()(w, x))
