"""Compilation helpers."""

import jax

ONCE_OPTIONS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": False}


def compile_once(fn, *args):
    """``fn`` compiled for ``args`` (arrays or ``jax.ShapeDtypeStruct``s) with XLA's backend optimisation off.

    For programs executed a single time (parameter init, evaluation): LLVM-optimising their many small PRNG kernels
    costs seconds on a CPU (10 s → 2 s for the mcVAE init) and gains nothing. XLA:CPU's older loop emitter, too,
    compiles them faster than its MLIR fusion emitters (the mcVAE init: 1.8–1.9 s against 2.5–3.1 s, 3 alternated
    runs each on 2 cores). Results are identical.
    """
    return jax.jit(fn).lower(*args).compile(compiler_options=ONCE_OPTIONS)


def run_once(fn, *args):
    """``compile_once(fn, *args)`` run once on ``args``."""
    return compile_once(fn, *args)(*args)
