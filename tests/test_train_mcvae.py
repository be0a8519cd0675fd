import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax.api as mc
from mcjax import run_dir
from mcjax.data import tables
from mcjax.eval import mcvae as evaluate
from mcjax.models.mcvae import MCVAE, latent_noise
from mcjax.train import mcvae as mcvae_train
from mcjax.train import sweep
from mcjax.train.runs import expand_runs


def _params_equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)))


def test_model_learns_on_a_small_subset(tiny_config, tmp_path):
    tiny_config.train.epochs = 40
    tiny_config.train.epochs_per_chunk = 20
    tiny_config.optimizer.learning_rate = 3e-3
    trained = sweep.train(tiny_config, str(tmp_path))
    summary = sweep.evaluate_and_report(tiny_config, str(tmp_path), trained)
    data, stage = trained.data, trained.stages[0]
    untrained = mcvae_train.init_states(stage.trainer, stage.runs, sweep._train_arrays(data)).params
    before = evaluate.evaluate_runs(stage.model, untrained, jnp.asarray(data.test_x_NxD),
                                    jax.tree.map(jnp.asarray, data.test_conditions), jax.random.key(0), (0.0,), 2)
    assert summary["mse"][0] < 0.12, summary["mse"]  # 0.090-0.102 over seeds 0-3
    assert summary["mse"][0] < 0.25 * float(before["mse"][0, 0])
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["inference_sparsity"] == [round(0.1 * i, 1) for i in range(10)]
    assert len(written["mse"]) == len(written["mse_many_z"]) == 10
    assert written["mse_mean"] == pytest.approx(np.mean(written["mse"]))
    assert len(written["rmse_mm"]) == 26 and (tmp_path / "mse_vs_sparsity.png").exists()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 40 and {"loss", "kl", "active_dims", "sparsity", "grad_norm"} <= set(json.loads(lines[-1]))
    last = json.loads(lines[-1])
    kl_per_dim = [last[f"kl_dim_{d}"] for d in range(tiny_config.model.latent_dim)]
    assert last["kl"] == pytest.approx(sum(kl_per_dim), rel=1e-4)  # the KL is the sum over dimensions
    assert 0 <= last["active_dims"] <= tiny_config.model.latent_dim


def test_generated_designs_follow_a_partial_condition(tiny_config, tmp_path):
    """Only BikeStyle given: rear wheels near the table's BMX (520 mm) and MTB (703 mm) means."""
    tiny_config.data.train_size = 0  # all 3,702 training rows: BMX bikes are 2 % of the table
    tiny_config.model.hidden_dims = (64, 32)
    tiny_config.train.batch_size = 140
    tiny_config.train.epochs = 40
    tiny_config.train.epochs_per_chunk = 40
    tiny_config.optimizer.learning_rate = 3e-3
    sweep.export(tiny_config, str(tmp_path), sweep.train(tiny_config, str(tmp_path)))
    run = mc.load_run(str(tmp_path))
    column = run.stats.keypoint_columns.index("Wheel diameter rear")
    bmx = mc.generate(run, {"BikeStyle": "BMX"}, 64, jax.random.key(0))[:, column].mean()
    mtb = mc.generate(run, {"BikeStyle": "MTB"}, 64, jax.random.key(0))[:, column].mean()
    assert abs(bmx - 520) < 50 and abs(mtb - 703) < 50, (bmx, mtb)
    at_the_mean = mc.generate(run, {"BikeStyle": "BMX"}, 3, jax.random.key(0), temperature=0.0)
    np.testing.assert_allclose(at_the_mean, at_the_mean[:1].repeat(3, axis=0))  # temperature 0: the prior's mean
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        mc.generate(run, {}, 1, jax.random.key(0), temperature=-1.0)


def test_a_sparsely_labelled_table_trains_and_follows_a_partial_condition(tiny_config, tmp_path):
    """40 % of the categorical cells emptied: label rates are recorded, missing labels are never given at any
    level, and BikeStyle given alone still picks the class's rear wheel."""
    columns = tables.read_csv_columns(tiny_config.data.csv_path)
    rng = np.random.default_rng(0)
    for name in tiny_config.data.categorical_columns:
        emptied = rng.random(len(columns[name])) < 0.4
        columns[name] = ["" if drop else value for value, drop in zip(columns[name], emptied)]
    (tmp_path / "sparse.csv").write_text(tables.csv_text(columns))
    tiny_config.data.csv_path = str(tmp_path / "sparse.csv")
    tiny_config.data.train_size = 0
    tiny_config.model.hidden_dims = (64, 32)
    tiny_config.train.batch_size = 140
    tiny_config.train.epochs = 40
    tiny_config.train.epochs_per_chunk = 40
    tiny_config.optimizer.learning_rate = 3e-3
    tiny_config.eval.inference_sparsity = (0.0, 0.5)
    workdir = tmp_path / "run"
    trained = sweep.train(tiny_config, str(workdir))
    sweep.export(tiny_config, str(workdir), trained)
    summary = sweep.evaluate_and_report(tiny_config, str(workdir), trained)
    rates = json.loads((workdir / run_dir.STATS).read_text())["label_rates"]
    assert len(rates) == 8 and all(abs(r - 0.6) < 0.03 for r in rates[:7]) and rates[7] > 0.99
    given_at_0 = np.mean(np.concatenate([trained.data.test_conditions.cat_BxK != 0,
                                         ~np.isnan(trained.data.test_conditions.num_BxJ)], axis=1))
    assert summary["conditions_given"][0] == pytest.approx(given_at_0)  # every label the test rows have
    assert summary["conditions_given"][1] == pytest.approx(given_at_0 / 2, abs=0.02)
    run = mc.load_run(str(workdir))
    column = run.stats.keypoint_columns.index("Wheel diameter rear")
    bmx = mc.generate(run, {"BikeStyle": "BMX"}, 64, jax.random.key(0))[:, column].mean()
    mtb = mc.generate(run, {"BikeStyle": "MTB"}, 64, jax.random.key(0))[:, column].mean()
    assert abs(bmx - 520) < 50 and abs(mtb - 703) < 50, (bmx, mtb)


def test_resume_is_bit_exact(tiny_config, tmp_path, monkeypatch):
    straight = sweep.train(tiny_config, str(tmp_path / "straight")).params

    real_save = run_dir.save_checkpoint

    def save_then_stop(manager, step, state):
        real_save(manager, step, state)
        raise KeyboardInterrupt  # the process dies right after the first checkpoint

    monkeypatch.setattr(run_dir, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        sweep.train(tiny_config, str(tmp_path / "resumed"))
    monkeypatch.setattr(run_dir, "save_checkpoint", real_save)
    resumed = sweep.train(tiny_config, str(tmp_path / "resumed")).params
    assert _params_equal(straight, resumed)
    metrics = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics] == [8 * e for e in range(1, 7)]


def test_vmapped_sweep_equals_separate_runs(tiny_config, tmp_path):
    tiny_config.train.epochs = 2
    tiny_config.sweep.seeds = (0, 1)
    tiny_config.sweep.train_sparsity = (0.1, 0.7)
    labels = [run.label for run in expand_runs(tiny_config)]
    assert [(label["train_sparsity"], label["seed"]) for label in labels] == [(0.1, 0), (0.1, 1), (0.7, 0), (0.7, 1)]
    swept = sweep.train(tiny_config, str(tmp_path / "sweep")).params[0]

    tiny_config.sweep.seeds, tiny_config.sweep.train_sparsity = (), ()
    tiny_config.train.seed = 1
    tiny_config.sparsity.p_start = tiny_config.sparsity.p_end = 0.7
    alone = sweep.train(tiny_config, str(tmp_path / "alone")).params[0]
    jax.tree.map(lambda s, a: np.testing.assert_allclose(s[3], a[0], rtol=1e-5, atol=1e-6), swept, alone)


def test_nan_loss_stops_training_with_the_step(tiny_config, tmp_path):
    tiny_config.optimizer.learning_rate = 1e9
    with pytest.raises(FloatingPointError, match=r"NaN/inf at step \d+ of run"):
        sweep.train(tiny_config, str(tmp_path))


def test_workdir_of_another_experiment_is_refused(tiny_config, tmp_path):
    tiny_config.train.epochs = 2
    sweep.train(tiny_config, str(tmp_path))
    tiny_config.model.latent_dim = 3
    with pytest.raises(ValueError, match="different config .*model.latent_dim"):
        sweep.train(tiny_config, str(tmp_path))


def test_bad_training_config(tiny_config, tmp_path):
    tiny_config.train.batch_size = 10_000
    with pytest.raises(ValueError, match="batch_size 10000 exceeds the 3702 training rows"):
        sweep.train(tiny_config, str(tmp_path))


def test_reference_protocol_uses_one_shared_z():
    model = MCVAE(num_keypoints=3, num_categories=(2,), num_numerical=1, keypoint_embedding_dim=4,
                  condition_embedding_dim=2, hidden_dims=(4,), latent_dim=2)
    from mcjax.conditions import Conditions

    cond = Conditions(jnp.array([[1], [2], [1]], jnp.int32), jnp.array([[0.1], [0.5], [0.9]]))
    x = jnp.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    params = model.init(jax.random.key(0), x, cond, jnp.zeros((3, 2)))
    key = jax.random.key(5)
    out = evaluate.evaluate_run(model, params, x, cond, key, (0.0,), num_draws=3)
    z = jnp.broadcast_to(latent_noise(jax.random.fold_in(key, 0), (), 2), (3, 2))
    x_hat = model.apply(params, z, cond, method=MCVAE.decode)
    assert float(out["mse"][0]) == pytest.approx(float(jnp.mean(jnp.sum((x_hat - x) ** 2, -1))), rel=1e-6)


def test_sweep_config_is_fifty_runs_in_one_program():
    from mcjax.configs.geobiked_vae_sweep import get_config

    runs = expand_runs(get_config())
    assert len(runs) == 50
    assert sorted({run.label["schedule"] for run in runs}) == [f"constant:{i / 10:g}" for i in range(10)]


@pytest.mark.slow
def test_table1_run_beats_the_paper(tmp_path):
    """The full default run (≈ 30 s on 2 cores): MSE at inference sparsity 0 below the paper's 0.0766."""
    from mcjax.configs.geobiked_vae import get_config

    config = get_config("paper")
    config.train.progress = False
    summary = sweep.train_and_evaluate(config, str(tmp_path))
    assert summary["mse"][0] < 0.0766 and summary["mse_mean"] < 0.0895


_SHARDED_RUN = """
import sys, jax, numpy as np
from mcjax.train import sweep
from mcjax.train.sweep import run_mesh
import ml_collections, json
config = ml_collections.ConfigDict(json.loads(open(sys.argv[1]).read()))
assert jax.device_count() == 4 and run_mesh(4).size == 4
params = sweep.train(config, sys.argv[2]).params
np.savez(sys.argv[3], *[np.asarray(p) for p in jax.tree.leaves(params)])
"""


def test_runs_sharded_over_four_cpu_devices_equal_one_device(tiny_config, tmp_path, four_device_environment):
    import subprocess
    import sys

    tiny_config.train.epochs = 2
    tiny_config.sweep.seeds = (0, 1, 2, 3)
    (tmp_path / "config.json").write_text(tiny_config.to_json())
    result = subprocess.run([sys.executable, "-c", _SHARDED_RUN, str(tmp_path / "config.json"),
                             str(tmp_path / "sharded"), str(tmp_path / "sharded.npz")],
                            capture_output=True, text=True, env=four_device_environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single = jax.tree.leaves(sweep.train(tiny_config, str(tmp_path / "single")).params)
    sharded = np.load(tmp_path / "sharded.npz")
    for i, leaf in enumerate(single):
        np.testing.assert_allclose(sharded[f"arr_{i}"], np.asarray(leaf), rtol=1e-5, atol=1e-6)


def test_a_conditional_prior_learns_class_means_and_spreads_where_the_standard_one_collapses(tiny_config, tmp_path):
    """A two-class toy table where the class sets the mean and noise sets the spread (sd 2 and 4 units): the
    conditional prior reproduces both; the paper's standard prior at the default beta draws the class mean only."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=800)
    x = np.where(labels[:, None] == 0, 0.0, 10.0) + rng.normal(size=(800, 2)) * np.where(labels[:, None] == 0, 2, 4)
    columns = ["x_a", "y_a"]
    lines = [",".join(columns + ["kind"])] + [",".join([*(f"{v:.4f}" for v in row), "ab"[c]])
                                               for row, c in zip(x, labels)]
    (tmp_path / "toy.csv").write_text("\n".join(lines) + "\n")
    config = tiny_config
    config.data.update(dict(csv_path=str(tmp_path / "toy.csv"), keypoint_columns=tuple(columns),
                            categorical_columns=("kind",), numerical_columns=(), numerical_na_values=(), train_size=0))
    config.model.update(dict(hidden_dims=(32, 16), latent_dim=4, prior_hidden_dims=(32,)))
    config.train.update(dict(epochs=100, epochs_per_chunk=100, checkpoint_every_epochs=100))
    config.optimizer.learning_rate = 3e-3
    config.eval.update(dict(inference_sparsity=(0.0,), class_samples=400))  # class means to ± 0.2 units
    config.sweep.runs = ({"prior": "conditional", "beta": 0.001}, {"prior": "standard", "beta": 0.7})
    summary = sweep.train_and_evaluate(config, str(tmp_path / "run"))
    conditional, standard = summary["runs"]
    assert 0.7 < conditional["spread_ratio"] < 1.3, conditional
    assert conditional["class_mean_error"] < 0.5, conditional  # table units: the classes are 10 apart
    assert standard["spread_ratio"] < 0.3, standard
    assert conditional["energy_score"][0] < standard["energy_score"][0]
