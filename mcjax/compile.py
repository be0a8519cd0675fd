"""Compilation helpers."""

import jax


def run_once(fn, *args):
    """Compiles ``fn`` with XLA's backend optimisation off and runs it once.

    For programs executed a single time (parameter init, evaluation): LLVM-optimising their many small PRNG kernels
    costs seconds on a CPU (10 s → 2 s for the mcVAE init) and gains nothing. Results are identical.
    """
    compiled = jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": "0"})
    return compiled(*args)
