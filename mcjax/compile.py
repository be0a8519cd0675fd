"""Compilation helpers."""

import jax


def compile_once(fn, *args):
    """``fn`` compiled for ``args`` (arrays or ``jax.ShapeDtypeStruct``s) with XLA's backend optimisation off.

    For programs executed a single time (parameter init, evaluation): LLVM-optimising their many small PRNG kernels
    costs seconds on a CPU (10 s → 2 s for the mcVAE init) and gains nothing. Results are identical.
    """
    return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": "0"})


def run_once(fn, *args):
    """``compile_once(fn, *args)`` run once on ``args``."""
    return compile_once(fn, *args)(*args)
