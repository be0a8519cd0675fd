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
    """Equal up to rounding (LLVM's levels may contract multiply-adds differently), on a loop that does not amplify it:
    gradient descent on a least-squares fit."""
    monkeypatch.setenv("XLA_FLAGS", "")

    def loop(w, x, y):
        grad = jax.grad(lambda w: jnp.mean((jnp.tanh(x @ w) - y) ** 2))
        return jax.lax.fori_loop(0, 50, lambda i, w: w - 0.5 * grad(w), w)

    keys = jax.random.split(jax.random.key(0), 3)
    w, x, y = (jax.random.normal(k, shape) for k, shape in zip(keys, [(16, 8), (64, 16), (64, 8)]))
    lowered = jax.jit(loop).lower(w, x, y)
    default = lowered.compile(compiler_options={"xla_backend_optimization_level": "3"})(w, x, y)  # not the tests' 0
    level_1 = compile_loop(lowered)(w, x, y)
    assert not np.allclose(level_1, w, atol=1e-3)  # it trained
    np.testing.assert_allclose(level_1, default, rtol=1e-5, atol=1e-6)
