"""The one host loop: chunk boundaries, metrics one chunk late, checkpoints and milestones, the NaN stop."""

import numpy as np
import pytest

from mcjax.train import loop


def _counting_chunk(losses=None):
    """A chunk that adds ``num`` to an integer state; its loss at step t is ``losses[t]`` (default 1)."""
    calls = []

    def chunk(state, first, num):
        calls.append((first, num))
        steps = np.arange(first, first + num)
        loss = np.ones(num) if losses is None else np.asarray(losses, np.float64)[steps]
        return state + num, {"loss": loss, "step": steps.astype(np.float64)}

    return chunk, calls


def test_chunks_end_on_checkpoints_and_milestones_and_metrics_arrive_in_order():
    chunk, calls = _counting_chunk()
    logged, saved, milestones = [], [], []

    def log(first, end, metrics):
        logged.append((first, end, metrics["step"].tolist()))
        return 1.0

    state = loop.run(0, 0, 23, chunk, chunk_size=4, log=log, log_every=8, checkpoint_every=10,
                     save=lambda done, s: saved.append((done, s)), milestone_every=6,
                     on_milestone=lambda done, s: milestones.append(done))
    assert state == 23
    assert calls == [(0, 4), (4, 2), (6, 4), (10, 2), (12, 4), (16, 2), (18, 2), (20, 3)]
    assert saved == [(10, 10), (20, 20), (23, 23)] and milestones == [6, 12, 18]
    steps = [s for _, _, window in logged for s in window]
    assert steps == list(range(23))  # every step's metrics, once, in order
    assert all(end == first + len(window) for first, end, window in logged)


def test_metrics_of_a_chunk_are_fetched_after_the_next_one_is_dispatched():
    events = []

    def chunk(state, first, num):
        events.append(("dispatch", first))
        return state + num, {"loss": np.ones(num)}

    loop.run(0, 0, 4, chunk, chunk_size=1, log=lambda first, end, m: events.append(("log", first)) or 1.0)
    assert events == [("dispatch", 0), ("dispatch", 1), ("log", 0), ("dispatch", 2), ("log", 1), ("dispatch", 3),
                      ("log", 2), ("log", 3)]


def test_a_resumed_loop_starts_at_its_step():
    chunk, calls = _counting_chunk()
    assert loop.run(7, 7, 10, chunk, chunk_size=5, log=lambda *a: 1.0) == 10
    assert calls == [(7, 3)]


def test_nan_loss_stops_training_with_the_step_before_anything_later_is_saved():
    losses = [0.5, 0.4] * 5 + [0.3, np.nan, 0.2, 0.1]
    chunk, _ = _counting_chunk(losses)
    logged, saved = [], []

    def log(first, end, metrics):
        logged.append(float(np.mean(metrics["loss"])))
        return logged[-1]

    with pytest.raises(FloatingPointError, match=r"U-Net loss became NaN/inf at step 11 \(loss nan\)"):
        loop.run(0, 0, 14, chunk, chunk_size=2, log=log, log_every=2, checkpoint_every=4,
                 save=lambda done, s: saved.append(done), name="U-Net")
    assert logged == pytest.approx([0.45] * 5) and saved == [4, 8]


def test_nan_of_one_run_names_the_run_and_its_exact_step():
    loss = np.array([[1.0, 1.0], [1.0, np.nan]])  # [runs, epochs]
    step = np.array([[-1, -1], [-1, 37]])
    assert loop.first_nonfinite(loss, 10, step) == (37, 1, pytest.approx(np.nan, nan_ok=True))
    assert loop.first_nonfinite(np.array([1.0, np.inf]), 10) == (11, None, np.inf)
    assert loop.first_nonfinite(np.ones((2, 3)), 0) is None


def test_is_time_and_scan_steps():
    assert [loop.is_time(b, d, 5) for b, d in ((0, 4), (4, 5), (5, 9), (3, 12))] == [False, True, False, True]
    assert not loop.is_time(0, 100, 0)
    import jax.numpy as jnp

    def step(s):
        return s + 1, {"value": s * 2}

    state, metrics = loop.scan_steps(step, jnp.int32(3), 4)
    assert int(state) == 7 and metrics["value"].tolist() == [6, 8, 10, 12]
    state, metrics = loop.scan_steps(step, jnp.int32(3), 1)
    assert int(state) == 4 and metrics["value"].tolist() == [6]
