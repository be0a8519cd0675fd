"""Paper experiments: nested subsets, runs of different sizes / lengths / widths in one program, resumption,
results files and the search."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax.api as mc
from mcjax import run_dir
from mcjax.conditions import Conditions, ConditionSpec
from mcjax.eval import mcvae as evaluate
from mcjax.train import mcvae as mcvae_train
from mcjax.train import sweep
from mcjax.train.runs import expand_runs, stack_runs


def _close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6), a, b)


def test_subsets_are_nested_seeded_and_fixed_across_epochs(tiny_config):
    tiny_config.sweep.train_sizes = (5, 20)
    tiny_config.sweep.seeds = (0, 1)
    settings = expand_runs(tiny_config)
    assert [(s.label["dataset_size"], s.seed) for s in settings] == [(5, 0), (5, 1), (20, 0), (20, 1)]
    runs = stack_runs(settings, 50, tiny_config.model)
    data = mcvae_train.MCVAEData(jnp.zeros((50, 3)), Conditions(jnp.zeros((50, 1), jnp.int32), jnp.zeros((50, 0))))
    model = sweep.mcvae_from_config(tiny_config.model, _spec(), 3)
    trainer = mcvae_train.make_trainer(model, tiny_config, runs)
    rows = jax.vmap(
        lambda r, e: mcvae_train.epoch_randomness(trainer, r, data, e, mcvae_train.subset_order(r, 50)).rows_P,
        in_axes=(0, None))

    def subsets(epoch):
        return [set(np.asarray(r[:n]).tolist()) for r, n in zip(rows(runs, epoch), (5, 5, 20, 20))]

    first, second = subsets(0), subsets(1)
    assert first == second  # the same rows every epoch (in a fresh order: checked below)
    assert not np.array_equal(rows(runs, 0)[2][:20], rows(runs, 1)[2][:20])
    assert first[0] <= first[2] and first[1] <= first[3]  # nested for each seed
    assert first[0] != first[1]  # each seed draws its own subset


def _spec():
    return ConditionSpec(("c",), (("a", "b"),), (), (), ())


def test_runs_of_different_sizes_in_one_program_equal_runs_trained_alone(tiny_config, tmp_path):
    """Sizes 40 and 100 both take one step per epoch (batch 64): one stage, the 40-row run in padded batches."""
    tiny_config.train.epochs = 3
    tiny_config.sweep.train_sizes = (40, 100)
    trained = sweep.train(tiny_config, str(tmp_path / "together"))
    assert len(trained.stages) == 1 and trained.stages[0].trainer.batch_size == 64
    for index, size in enumerate((40, 100)):
        tiny_config.sweep.train_sizes = ()
        tiny_config.data.train_size = size
        alone = sweep.train(tiny_config, str(tmp_path / f"alone{size}")).params[0]
        _close(jax.tree.map(lambda a, i=index: a[i:i + 1], trained.params[0]), alone)


def _widen(narrow, wide, latent: tuple[int, int], conditions: int, cond_width: tuple[int, int]):
    """Places narrow parameters into zeros of the wide network's shapes (the active block of each run)."""
    (l_narrow, l_wide), (c_narrow, c_wide) = latent, cond_width

    def place(path, n, w):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        out = jnp.zeros_like(w)
        if "to_posterior" in name:  # [.., mean | logvar]: each half at the start of the wide half
            rows = tuple(slice(0, s) for s in n.shape[:-1])
            out = out.at[rows + (slice(0, l_narrow),)].set(n[..., :l_narrow])
            return out.at[rows + (slice(l_wide, l_wide + l_narrow),)].set(n[..., l_narrow:])
        if "decoder/layer_0/kernel" in name:  # rows [z | e_y of each condition]
            out = out.at[:l_narrow, :n.shape[1]].set(n[:l_narrow])
            for k in range(conditions):
                out = out.at[l_wide + k * c_wide:l_wide + k * c_wide + c_narrow, :n.shape[1]].set(
                    n[l_narrow + k * c_narrow:l_narrow + (k + 1) * c_narrow])
            return out
        return out.at[tuple(slice(0, s) for s in n.shape)].set(n)

    return jax.tree_util.tree_map_with_path(place, narrow, wide)


def test_width_masked_network_trains_exactly_like_the_narrow_one(tiny_config):
    """A narrow run inside a wider network (kp 32, cond 4, hidden 32-16, latent 4) starts from the narrow network's
    values and follows its trajectory; the inactive units stay exactly zero; evaluation agrees."""
    tiny_config.train.epochs = 3
    narrow_widths = {"keypoint_embedding_dim": 8, "condition_embedding_dim": 3, "hidden_dims": (12, 8),
                     "latent_dim": 3}
    tiny_config.sweep.runs = (narrow_widths | {"epochs": 2}, {"latent_dim": 4})  # different epochs and widths too
    data, _, (wide,) = sweep.prepare_experiment(tiny_config)
    assert wide.runs.widths is not None and wide.model.hidden_dims == (32, 16)

    tiny_config.sweep.runs = ()
    tiny_config.model.update(narrow_widths)
    tiny_config.train.epochs = 2
    _, _, (narrow,) = sweep.prepare_experiment(tiny_config)
    train_data = sweep._train_arrays(data)
    narrow_state = mcvae_train.init_states(narrow.trainer, narrow.runs, train_data)
    wide_state = mcvae_train.init_states(wide.trainer, wide.runs, train_data)
    start = _widen(jax.tree.map(lambda a: a[0], narrow_state.params), jax.tree.map(lambda a: a[0], wide_state.params),
                   latent=(3, 4), conditions=8, cond_width=(3, 4))
    params = jax.tree.map(lambda w, s: w.at[0].set(s), wide_state.params, start)
    wide_state = wide_state._replace(params=params)

    narrow_out, _ = mcvae_train.compiled_train_epochs(narrow.trainer, 3)(narrow_state, narrow.runs, train_data, 2)
    wide_out, metrics = mcvae_train.compiled_train_epochs(wide.trainer, 3)(wide_state, wide.runs, train_data, 3)
    assert np.asarray(metrics["trained"]).tolist() == [[True, True, False], [True, True, True]]
    assert np.asarray(wide_out.epoch).tolist() == [2, 3]
    trained_narrow = jax.tree.map(lambda a: a[0], narrow_out.params)
    trained_wide = jax.tree.map(lambda a: a[0], wide_out.params)
    expected = _widen(trained_narrow, trained_wide, latent=(3, 4), conditions=8, cond_width=(3, 4))
    _close(trained_wide, expected)
    for leaf, reference in zip(jax.tree.leaves(trained_wide), jax.tree.leaves(expected)):
        assert np.all(np.asarray(leaf)[np.asarray(reference) == 0] == 0)  # inactive units exactly zero

    x, cond = jnp.asarray(data.test_x_NxD), jax.tree.map(jnp.asarray, data.test_conditions)
    key = jax.random.key(0)
    narrow_eval = evaluate.evaluate_runs(narrow.model, narrow_out.params, x, cond, key, (0.0, 0.5), 2)
    wide_eval = evaluate.evaluate_runs(wide.model, wide_out.params, x, cond, key, (0.0, 0.5), 2, wide.runs.widths)
    np.testing.assert_allclose(wide_eval["mse"][0], narrow_eval["mse"][0], rtol=1e-4)


@pytest.mark.slow  # ≈ 29 s; test_resume_is_bit_exact (test_train_mcvae.py) covers resumption in the default suite
def test_interrupted_experiment_resumes_without_retraining_finished_stages(tiny_config, tmp_path, monkeypatch):
    tiny_config.train.epochs = 4
    tiny_config.sweep.train_sizes = (40, 300)  # one and four steps per epoch: two stages
    straight = sweep.train(tiny_config, str(tmp_path / "straight")).params

    real_save, saves = run_dir.save_checkpoint, []

    def save_then_stop(manager, step, state):
        real_save(manager, step, state)
        saves.append(step)
        if len(saves) == 3:  # stage 1 saved at epochs 2 and 4; stage 2 at epoch 2, then the process dies
            raise KeyboardInterrupt

    monkeypatch.setattr(run_dir, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        sweep.train(tiny_config, str(tmp_path / "resumed"))
    monkeypatch.setattr(run_dir, "save_checkpoint", real_save)
    chunks = []
    compiled = mcvae_train.compiled_train_epochs
    monkeypatch.setattr(mcvae_train, "compiled_train_epochs", lambda trainer, n, mesh: lambda *a: chunks.append(
        trainer.batch_size) or compiled(trainer, n, mesh)(*a))
    trained = sweep.train(tiny_config, str(tmp_path / "resumed"))
    resumed = trained.params
    assert chunks == [64]  # only stage 2 (batch 64) trained, one chunk: epochs 3-4
    _close(straight, resumed)
    sweep.export(tiny_config, str(tmp_path / "resumed"), trained)
    run = mc.load_run(str(tmp_path / "resumed"), run_index=1)  # the run of stage 2
    assert run.label["dataset_size"] == 300
    _close(run.params, jax.tree.map(lambda a: a[0], resumed[1]))
    lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert sorted((line["run"], line["step"]) for line in lines) == sorted(
        [(0, e) for e in range(1, 5)] + [(1, 4 * e) for e in range(1, 5)])


def test_datasize_experiment_writes_results(tiny_config, tmp_path):
    config = tiny_config
    config.report.paper = "table2"
    config.train.epochs = 2
    config.sweep.train_sizes = (20, 100)
    config.sweep.train_sparsity = (0.0, 0.5)
    config.sweep.seeds = (0, 1)
    summary = sweep.train_and_evaluate(config, str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["rows"]) == 8 == len(summary["runs"])
    for row in results["rows"]:
        assert {"dataset_size", "train_sparsity", "seed", "mse", "mse_mean"} <= set(row)
        assert len(row["mse"]) == 10 and row["mse_mean"] == pytest.approx(np.mean(row["mse"]))
    assert {(r["dataset_size"], r["train_sparsity"], r["seed"]) for r in results["rows"]} == {
        (n, p, s) for n in (20, 100) for p in (0.0, 0.5) for s in (0, 1)}
    markdown = (tmp_path / "results.md").read_text()
    assert "paper Table 2" in markdown and "| 100 |" in markdown
    assert (tmp_path / "mse_vs_dataset_size.png").exists() and (tmp_path / "mse_by_setting.png").exists()
    assert "| spread ratio |" in markdown and (tmp_path / "tradeoff.png").exists()
    assert markdown.count("| train_sparsity=") == 4  # one row per setting: its seeds averaged, metrics no label


def test_explicit_runs_reject_unknown_fields(tiny_config):
    tiny_config.sweep.runs = ({"learning_rat": 0.1},)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['learning_rat'\]"):
        expand_runs(tiny_config)


def _tiny_search(tiny_config):
    from mcjax.configs.geobiked_vae_search import get_config

    config = get_config()
    for block in ("model", "train", "eval"):
        config[block].update(tiny_config[block])
    config.compilation_cache_dir = tiny_config.compilation_cache_dir
    config.search.update(dict(num_trials=4, trials_per_batch=2, startup_trials=2, final_seeds=(0, 1)))
    config.search.space.update(dict(keypoint_embedding_dim="int:4:16", condition_embedding_dim="int:2:4",
                                    hidden_0="int:8:16", hidden_1="int:4:8", hidden_2="int:2:4",
                                    latent_dim="int:2:4", batch_size="choice:64,128", epochs="int:1:3"))
    config.search.grid = {"learning_rate": (1.0, 2.0)}
    return config


@pytest.mark.slow  # ≈ 42 s: five trial batches and the final seeds
def test_search_trains_batches_resumes_and_reports(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from mcjax.train import search

    config = _tiny_search(tiny_config)
    calls, real = [], sweep.train_and_evaluate

    def interrupt_second_batch(cfg, workdir):
        calls.append(workdir)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, workdir)

    monkeypatch.setattr(sweep, "train_and_evaluate", interrupt_second_batch)
    with pytest.raises(KeyboardInterrupt):
        search.run_search(config, str(tmp_path))
    monkeypatch.setattr(sweep, "train_and_evaluate", lambda cfg, wd: calls.append(wd) or real(cfg, wd))
    final = search.run_search(config, str(tmp_path))
    batches = [c.split("/")[-1] for c in calls]
    assert batches == ["00000", "00002", "00002", "00004", "final"]  # batch 1 not retrained; grid = trials 4-5
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["trial"] for r in results["rows"]] == list(range(6))
    for row in results["rows"]:
        assert {"hidden_0", "learning_rate", "batch_size", "epochs", "mse", "mse_mean", "objective"} <= set(row)
        assert 4 <= row["keypoint_embedding_dim"] <= 16 and row["batch_size"] in (64, 128)
    best = min(results["rows"][:4], key=lambda r: r["objective"])
    grid = {best["learning_rate"], min(2 * best["learning_rate"], 1e-2)}  # clipped to the space's bound
    assert {r["learning_rate"] for r in results["rows"][4:]} == grid
    assert len(final["runs"]) == 2 and "Best trial" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "search_history.png").exists() and (tmp_path / "search_importances.png").exists()
    batch = json.loads((tmp_path / "batches" / "00000" / "config.json").read_text())
    assert batch["data"]["validation_fraction"] == 0.15  # trials never see the test split
    assert search.run_search(config, str(tmp_path))["mse"] == final["mse"]  # a finished search only reports


def test_total_sparsity_target_reaches_the_trainer(tiny_config, tmp_path):
    tiny_config.train.sparsity_target = "total"
    tiny_config.train.epochs = 2
    tiny_config.train.epochs_per_chunk = 2
    trained = sweep.train(tiny_config, str(tmp_path))
    rates = trained.stages[0].trainer.label_rates
    assert len(rates) == 8 and min(rates) > 0.99  # GeoBiked: only two "Teeth on chainring" values are missing
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(last["loss"]) and last["sparsity"] == pytest.approx(0.5)
