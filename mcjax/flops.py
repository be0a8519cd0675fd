"""Model FLOPs of a JAX function, counted from its jaxpr: 2 × multiply-adds of every matrix product and convolution.

This is the numerator of model FLOP utilisation (MFU): the same count on every backend, whatever the compiler makes
of the program. XLA's own cost analysis is not: on GPUs it leaves out convolutions that run as cuDNN calls, and a
lowered (uncompiled) program has none there at all. Elementwise work (normalisation, activations, the optimiser) is
not counted, as usual for MFU.
"""

from __future__ import annotations

import math

import jax
from jax import lax
from jax.extend import core


def _dot_flops(eqn) -> int:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    contracted = math.prod(lhs.shape[d] for d in lhs_contracting)
    return 2 * math.prod(eqn.outvars[0].aval.shape) * contracted


def _conv_flops(eqn) -> int:
    """Each output element sums kernel-window × input-features-per-group products (also for the weight- and
    input-gradient convolutions of a backward pass, which are convolutions with other dimension numbers)."""
    rhs = eqn.invars[1].aval
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial)
    window = math.prod(rhs.shape[d] for d in rhs_spec[2:])
    return 2 * math.prod(eqn.outvars[0].aval.shape) * rhs.shape[rhs_spec[1]] * window


def _sub_jaxprs(value):
    if isinstance(value, core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def jaxpr_flops(jaxpr: core.Jaxpr) -> int:
    """FLOPs of one evaluation of ``jaxpr``: a scan's body counts ``length`` times, a cond its costliest branch, a
    while loop's body once (its trip count is not known before it runs)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.dot_general_p:
            total += _dot_flops(eqn)
        elif eqn.primitive is lax.conv_general_dilated_p:
            total += _conv_flops(eqn)
        elif eqn.primitive is lax.cond_p:
            total += max(jaxpr_flops(branch.jaxpr) for branch in eqn.params["branches"])
        else:
            repeats = eqn.params.get("length", 1) if eqn.primitive is lax.scan_p else 1
            inner = [jaxpr_flops(sub) for value in eqn.params.values() for sub in _sub_jaxprs(value)]
            total += repeats * sum(inner)
    return total


def model_flops(fn, *args, **kwargs) -> int:
    """FLOPs of ``fn(*args, **kwargs)`` (arrays or ``jax.ShapeDtypeStruct``s): traced, never run."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
