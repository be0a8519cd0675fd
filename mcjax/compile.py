"""Compilation helpers."""

import jax

from mcjax import runtime

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


def compile_loop(lowered):
    """A lowered mcVAE training loop compiled, on CPUs with LLVM at level 1 instead of its default 3.

    The loop's steps are YNNPACK's matrix products and small fused loops that level 1 already makes fast: the
    Table-1 program compiled in 5.9–7.1 s against 7.2–7.8 s (three processes, 2 cores) and its steps could not be
    told apart (best of 8 chunks: 1.23–1.47 against 1.26–1.42 ms); its test MSE came out bit-identical. A level
    set in XLA_FLAGS is kept.
    """
    level_1 = jax.default_backend() == "cpu" and not runtime.xla_flag_is_set("--xla_backend_optimization_level")
    return lowered.compile(compiler_options={"xla_backend_optimization_level": "1"} if level_1 else None)
