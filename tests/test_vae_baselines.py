"""The PyTorch baselines of benchmarks/vae_throughput.py train the mcVAE: their loss falls on a tiny run.

The default suite runs ExpertTrainer's step eagerly (the same function torch.compile compiles); the compiled step,
whose first compilation takes minutes on 2 shared cores, runs with -m slow.
"""

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from mcjax.configs.geobiked_vae import get_config  # noqa: E402

from mcjax.train.sweep import prepare_experiment  # noqa: E402
from tests.torch_vae import ExpertTrainer, reference_mse, train_torch  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    """The paper's mcVAE on 700 training rows (5 steps of 140 per epoch), one thread (a shared CPU)."""
    config = get_config("paper")
    data = prepare_experiment(config)[0]
    data = dataclasses.replace(data, train_x_NxD=data.train_x_NxD[:700],
                               train_conditions=type(data.train_conditions)(*(a[:700] for a in data.train_conditions)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield config, data
    torch.set_num_threads(threads)


def falls(losses) -> bool:
    return bool(torch.isfinite(losses).all() and (losses[-1] < 0.5 * losses[0]).all())


@pytest.mark.parametrize("runs", [None, 3])
def test_expert_step_eager_loss_falls(setup, runs):
    config, data = setup
    trainer = ExpertTrainer(config, data, num_runs=runs, sparsity=None if runs is None else [0.0, 0.5, 0.9],
                            compile=False)
    untrained = reference_mse(trainer.model(runs - 1 if runs else 0), data)
    losses = trainer.train(4)
    assert losses.shape == ((4,) if runs is None else (4, runs))
    assert falls(losses), losses
    assert reference_mse(trainer.model(runs - 1 if runs else 0), data) < 0.5 * untrained


def test_reference_loop_loss_falls(setup):
    config, data = setup
    untrained = reference_mse(ExpertTrainer(config, data, compile=False).model(), data)  # the same initialisation
    model, _, _ = train_torch(config, data, epochs=4)
    assert reference_mse(model, data) < 0.5 * untrained


@pytest.mark.slow
@pytest.mark.parametrize("runs", [None, 3])
def test_expert_step_compiled_loss_falls(setup, runs):
    config, data = setup
    trainer = ExpertTrainer(config, data, num_runs=runs, sparsity=None if runs is None else [0.0, 0.5, 0.9])
    assert falls(trainer.train(4))
