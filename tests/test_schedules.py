import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcjax.configs.geobiked_vae import get_config

from mcjax import schedules


def _schedule(kind, p_start, p_end, total=1000, spe=10, **kw):
    config = get_config().sparsity
    config.update(dict(kind=kind, p_start=p_start, p_end=p_end, **kw))
    return schedules.create_sparsity_schedule(config, total, spe)


def _at(schedule, step):
    return float(schedule(jnp.asarray(step)))


@pytest.mark.parametrize("p_start,p_end", [(0.1, 0.9), (0.9, 0.1), (0.5, 0.6), (0.6, 0.5)])
def test_paper_formulas(p_start, p_end):
    T = 1000
    assert _at(_schedule("constant", p_start, p_end), 777) == pytest.approx(p_start)
    linear = _schedule("linear", p_start, p_end)
    for t in (0, 250, 1000):
        assert _at(linear, t) == pytest.approx(p_start + (p_end - p_start) * t / T, abs=1e-6)
    step = _schedule("step", p_start, p_end, num_segments=4)
    for t, i in ((0, 1), (249, 1), (250, 2), (600, 3), (999, 4)):  # eq. 4, segment i of N = 4
        assert _at(step, t) == pytest.approx(p_start + (i - 1) * (p_end - p_start) / 4, abs=1e-6)
    expo = _schedule("exponential", p_start, p_end)
    for t in (0, 100, 1000):  # eq. 5 with tau = T
        assert _at(expo, t) == pytest.approx(p_start + (p_end - p_start) * (1 - math.exp(-t / T)), abs=1e-6)
    fast = _schedule("exponential", p_start, p_end, time_constant=0.1)
    assert _at(fast, 1000) == pytest.approx(p_start + (p_end - p_start) * (1 - math.exp(-10)), abs=1e-6)


def _reference_history(kind, init, target, epochs, step_size=1):
    """The authors' code's per-epoch schedulers, transcribed as plain Python loops."""
    init = init or 1e-10 if kind != "linear" else init
    target = target or 1e-10 if kind != "linear" else target
    p, history = init, [init]
    if kind == "step":
        gamma = (target / init) ** (1 / (epochs / step_size - 1)) if init != target else 1.0
    elif kind == "exponential":
        gamma = (target / init) ** (1 / epochs)
    for epoch in range(2, epochs + 1):
        if kind == "linear":
            new = p + (target - init) / epochs
        elif kind == "step":
            new = p * gamma if epoch % step_size == 0 else p
        else:
            new = p * gamma
        if kind == "exponential":
            p = new
        else:
            p = new if (init < target and new < target) or (init > target and new > target) else target
        history.append(p)
    return history


@pytest.mark.parametrize("kind", ["linear", "step", "exponential"])
@pytest.mark.parametrize("p_start,p_end", [(0.1, 0.6), (0.6, 0.1), (0.0, 0.5)])
def test_reference_variants_match_the_reference_loop(kind, p_start, p_end):
    epochs, spe, segments = 40, 3, 4
    expected = _reference_history(kind, p_start, p_end, epochs, step_size=epochs // segments)
    schedule = _schedule(f"reference_{kind}", p_start, p_end, total=epochs * spe, spe=spe, num_segments=segments)
    got = [_at(schedule, e * spe + 1) for e in range(epochs)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_validation_errors():
    with pytest.raises(ValueError, match=r"p_end must be in \[0, 1\]"):
        _schedule("linear", 0.1, 1.5)
    with pytest.raises(ValueError, match="Unknown sparsity schedule kind 'cosine'"):
        _schedule("cosine", 0.1, 0.5)
    with pytest.raises(ValueError, match="num_segments"):
        _schedule("step", 0.1, 0.5, num_segments=0)


def test_schedules_of_different_kinds_vmap_into_one_program():
    configs = []
    for kind in schedules.KINDS:
        config = get_config().sparsity
        config.update(dict(kind=kind, p_start=0.2, p_end=0.7))
        configs.append(config)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[schedules.schedule_params(c) for c in configs])
    steps = jnp.array([0, 130, 555, 999])
    batched = jax.jit(jax.vmap(lambda s: schedules.sparsity(s, steps, 1000, 10)))(stacked)
    for config, row in zip(configs, batched):
        single = schedules.create_sparsity_schedule(config, 1000, 10)(steps)
        np.testing.assert_allclose(row, single, rtol=1e-6)
    assert np.all((batched >= 0) & (batched <= 1))
