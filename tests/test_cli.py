"""train.py and sample.py as a user runs them, with tiny settings."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.test_event_file import read_events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.data.train_size=256", "--config.model.keypoint_embedding_dim=16",
        "--config.model.condition_embedding_dim=3", "--config.model.hidden_dims=(16,)", "--config.model.latent_dim=3",
        "--config.train.batch_size=64", "--config.train.epochs=3", "--config.train.progress=False",
        "--config.eval.num_draws=2"]


def _run(script, *args, **environment):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **environment}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, compilation_cache):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    result = _run("train.py", "--config", "configs/geobiked_vae.py", "--workdir", str(workdir), *TINY,
                  f"--config.compilation_cache_dir={compilation_cache}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_train_cli_writes_results(trained_workdir):
    workdir, result = trained_workdir
    summary = json.loads((workdir / "eval.json").read_text())
    assert {"inference_sparsity", "mse", "mse_mean", "mse_many_z"} <= set(summary)
    assert "MSE (reference)" in result.stdout
    for name in ("config.json", "stats.json", "metrics.jsonl", "mse_vs_sparsity.png", "checkpoints",
                 "inference/manifest.json", "inference/stage_0.safetensors"):
        assert (workdir / name).exists(), name
    (events,) = (workdir / "tensorboard").glob("events.out.tfevents.*")
    assert "loss" in [v.tag for v in read_events(events)[1].summary.value]


def test_sample_cli_partial_conditions(trained_workdir, tmp_path):
    workdir, _ = trained_workdir
    result = _run("sample.py", "--workdir", str(workdir), "--condition", "BikeStyle=BMX",
                  "--condition", "Teeth on chainring=44", "--num_samples", "5", "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "samples.csv").open()))
    assert len(rows) == 5
    assert rows[0]["BikeStyle"] == "BMX" and rows[0]["Teeth on chainring"] == "44" and rows[0]["frame_size"] == ""
    assert all(math.isfinite(float(row["Wheel diameter rear"])) for row in rows)
    assert (tmp_path / "samples.png").stat().st_size > 1000


@pytest.mark.parametrize("condition,message", [
    ("BikeStyle=UNICYCLE", "valid values: ['BMX'"),
    ("Colour=red", "valid conditions: ['BikeStyle'"),
    ("BikeStyle", "expected NAME=VALUE"),
])
def test_sample_cli_rejects_unknown_conditions(trained_workdir, tmp_path, condition, message):
    workdir, _ = trained_workdir
    result = _run("sample.py", "--workdir", str(workdir), "--condition", condition, "--output_dir", str(tmp_path))
    _assert_one_line_error(result, message)


def _assert_one_line_error(result, message):
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def _table(tmp_path, edit) -> str:
    """The GeoBiked table's header and first 40 rows as a CSV, with ``edit(table)`` applied (row 0 is the header)."""
    import gzip

    from mcjax.data import geobiked

    with gzip.open(geobiked.csv_path(), "rt", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[:41]
    edit(rows)
    path = tmp_path / "table.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return str(path)


def _set_column(name, value):
    def edit(table):
        table[3][table[0].index(name)] = value
    return edit


@pytest.mark.parametrize("override,message", [
    (lambda tmp: "/nonexistent.csv", "Table not found: /nonexistent.csv"),
    (lambda tmp: _table(tmp, _set_column("x_BB", "wide")), "'wide' is not a number"),
])
def test_train_cli_input_errors_are_one_line(tmp_path, override, message):
    result = _run("train.py", "--config", "configs/geobiked_vae.py", "--workdir", str(tmp_path / "run"),
                  f"--config.data.csv_path={override(tmp_path)}")
    _assert_one_line_error(result, message)


@pytest.mark.parametrize("edit,message", [
    (lambda table: table.__delitem__(slice(1, None)), "has a header but no rows"),
    (_set_column("x_BB", ""), "keypoints must all be finite"),
    (lambda table: table[0].__setitem__(table[0].index("x_BB"), "x_bb"), "lacks column(s) ['x_BB']"),
])
def test_bad_tables_are_input_errors(tmp_path, edit, message):
    """What train.py prints as one line (the wrapper is tested in test_runtime.py)."""
    from mcjax.configs.geobiked_vae import get_config

    from mcjax.data import tables
    from mcjax.errors import InputError

    config = get_config()
    config.data.csv_path = _table(tmp_path, edit)
    with pytest.raises(InputError) as error:
        tables.table_from_config(config.data)
    assert message in str(error.value)


def test_a_missing_workdir_is_one_line(tmp_path):
    _assert_one_line_error(_run("sample.py", "--workdir", str(tmp_path / "none")), "inference not found")


def test_older_workdir_is_exported_then_sampled(trained_workdir, tmp_path):
    workdir, _ = trained_workdir
    older = tmp_path / "older"
    shutil.copytree(workdir, older)
    shutil.rmtree(older / "inference")  # as an mcjax without bundles left it
    result = _run("sample.py", "--workdir", str(older), "--output_dir", str(tmp_path / "s"))
    _assert_one_line_error(result, f"python train.py --export --workdir {older}")
    result = _run("train.py", "--export", "--workdir", str(older))
    assert result.returncode == 0 and "stage 1/" not in result.stdout, result.stderr[-3000:]
    for name in ("manifest.json", "stage_0.safetensors"):
        assert (older / "inference" / name).read_bytes() != b""
    from safetensors.numpy import load_file

    exported, original = (load_file(d / "inference" / "stage_0.safetensors") for d in (older, workdir))
    assert exported.keys() == original.keys()
    for key in original:
        np.testing.assert_array_equal(exported[key], original[key])


@pytest.mark.slow  # ≈ 25 s each; the library-level experiment tests and test_train_cli_writes_results stay
@pytest.mark.parametrize("config,extra", [
    ("configs/geobiked_vae_datasize.py",
     ["--config.sweep.train_sizes=(20,300)", "--config.sweep.train_sparsity=(0.0,0.5)", "--config.sweep.seeds=(0,)"]),
    ("configs/geobiked_vae_schedules.py:reference", ["--config.sweep.seeds=(0,)"]),
])
def test_experiment_commands(tmp_path, compilation_cache, config, extra):
    tiny = [a for a in TINY if "train_size" not in a]
    result = _run("train.py", "--config", config, "--workdir", str(tmp_path), *tiny, *extra,
                  f"--config.compilation_cache_dir={compilation_cache}", "--config.train.tensorboard=False")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert len(rows) == (4 if "datasize" in config else 23)
    assert "| setting |" in (tmp_path / "results.md").read_text()
    again = _run("train.py", "--config", config, "--workdir", str(tmp_path), *tiny, *extra,
                 f"--config.compilation_cache_dir={compilation_cache}", "--config.train.tensorboard=False")
    assert again.returncode == 0 and "stage 1/" not in again.stdout  # finished: nothing is retrained


@pytest.mark.slow  # ≈ 35 s; the search itself is tested in-process in test_train_sweep.py
def test_search_command(tmp_path, compilation_cache):
    pytest.importorskip("optuna")
    small = ["--config.search.num_trials=2", "--config.search.trials_per_batch=2", "--config.search.startup_trials=2",
             "--config.search.space.epochs=int:1:2", "--config.search.space.hidden_0=int:8:16",
             "--config.search.grid.learning_rate=(1.0,2.0)", "--config.search.grid.beta=(1.0,)",
             "--config.search.final_seeds=(0,)", "--config.eval.num_draws=2"]
    result = _run("train.py", "--config", "configs/geobiked_vae_search.py", "--workdir", str(tmp_path), *small,
                  f"--config.compilation_cache_dir={compilation_cache}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(json.loads((tmp_path / "results.json").read_text())["rows"]) == 2 + 2  # 2 TPE + 2 × 1 grid
