"""Searches shared by several worker processes on one Optuna storage (mcjax/train/search_storage.py): every trial
trained once, a killed worker's batch retried by whoever restarts, the grid and the final evaluation done once;
storage URLs that cannot work stop with one line. The workers' training is a stand-in that logs what it trains, so
these tests time the protocol, not JAX (test_train_sweep.py and the slow test below train for real)."""

import json
import os
import subprocess
import sys
import time

import pytest

from mcjax.errors import InputError
from mcjax.train import search_storage

optuna = pytest.importorskip("optuna")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_train(cfg, workdir):
    """Stands in for sweep.train_and_evaluate: logs the runs it was given (FAKE_TRAIN_LOG), dies there if
    DIE_IN_FIRST_BATCH is set, and scores each run by its learning rate + β."""
    runs = [dict(r) for r in cfg.sweep.runs]
    with open(os.environ["FAKE_TRAIN_LOG"], "a") as f:
        f.write(json.dumps({"workdir": workdir, "runs": runs, "seeds": list(cfg.sweep.seeds)}) + "\n")
    if os.environ.get("DIE_IN_FIRST_BATCH"):
        os._exit(9)  # killed mid-batch, after claiming its trials
    time.sleep(0.2)
    rows = [{"trial": r.get("trial"), "seed": s, "mse": [r["learning_rate"] + r["beta"]] * 10,
             "mse_mean": r["learning_rate"] + r["beta"], "mse_many_z": [r["learning_rate"] + r["beta"]] * 10}
            for r in runs for s in cfg.sweep.seeds]
    return {"inference_sparsity": [i / 10 for i in range(10)], "runs": rows}


# A worker process: run_search with the training replaced by fake_train.
WORKER = """
import json, os, sys
import ml_collections
sys.path.insert(0, "tests")
from test_train_search_storage import fake_train
from mcjax.train import search, sweep

config_path, workdir = sys.argv[1:]
sweep.train_and_evaluate = fake_train
search.plot_history = search.plot_importances = lambda study, path: None
summary = search.run_search(ml_collections.ConfigDict(json.load(open(config_path))), workdir)
json.dump(summary, open(os.path.join(workdir, "summary.json"), "w"))
"""


def _search_config(storage: str):
    from mcjax.configs.geobiked_vae_search import get_config

    config = get_config()
    # A worker is presumed dead after 2.5 s of silence: a busy 2-core machine can stall one for a second.
    config.search.update(dict(num_trials=6, trials_per_batch=2, startup_trials=2, final_seeds=(0, 1),
                              storage=storage, heartbeat_s=0.5))
    config.search.grid = {"learning_rate": (1.0, 2.0)}
    return config


def _start(tmp_path, config, name, **env):
    config_path = tmp_path / "config.json"
    config_path.write_text(config.to_json())
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", WORKER, str(config_path), str(workdir)], cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", "FAKE_TRAIN_LOG": str(tmp_path / "log"), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout_s=120) -> str:
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, out[-3000:]
    return out


def _trained(tmp_path) -> tuple[list[dict], list[dict]]:
    """Trial runs and final-stage calls, as the workers' training saw them."""
    calls = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    return [r for c in calls if "final" not in c["workdir"] for r in c["runs"]], \
        [c for c in calls if c["workdir"].endswith("final")]


def _check_study(storage, trained_runs, num_trials=6, grid=2):
    """Every sampled and grid trial finished once; nothing trained twice; retries only of stale trials."""
    study = optuna.load_study(study_name="mcjax", storage=search_storage.open_storage(storage))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    sampled = [t for t in complete if search_storage.is_fresh(t) or search_storage.RETRY_OF in t.user_attrs]
    assert len(complete) == num_trials + grid and len(sampled) == num_trials
    assert len({json.dumps(t.params, sort_keys=True) for t in sampled}) == num_trials  # no parameters twice
    assert sorted(r["trial"] for r in trained_runs) == sorted(set(r["trial"] for r in trained_runs))
    for t in study.trials:
        if t.state == optuna.trial.TrialState.FAIL:
            assert search_storage.STALE in t.user_attrs or search_storage.SURPLUS in t.user_attrs
    return study


def test_two_workers_share_one_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = _search_config(storage)
    workers = [_start(tmp_path, config, f"w{i}") for i in range(2)]
    outputs = [_finish(w) for w in workers]
    runs, finals = _trained(tmp_path)
    _check_study(storage, runs)
    assert len(finals) == 1 and finals[0]["seeds"] == [0, 1]  # the final evaluation ran once
    reports = [w for w in ("w0", "w1") if (tmp_path / w / "results.json").exists()]
    assert len(reports) == 1 and len(json.loads((tmp_path / reports[0] / "results.json").read_text())["rows"]) == 8
    summaries = [json.loads((tmp_path / w / "summary.json").read_text()) for w in ("w0", "w1")]
    assert summaries[0] == summaries[1]  # the other worker returns the same final summary
    assert any("final evaluation and report by worker" in out for out in outputs)


@pytest.mark.parametrize("same_id", [False, pytest.param(True, marks=pytest.mark.slow)])  # True: ≈ 12 s
def test_a_killed_workers_batch_is_retrained_by_whoever_restarts(tmp_path, same_id):
    storage = f"journal:///{tmp_path / 'study.log'}"
    config = _search_config(storage)
    env = {"MCJAX_SEARCH_WORKER": "w0"} if same_id else {}
    killed = _start(tmp_path, config, "w0", DIE_IN_FIRST_BATCH="1", **env)
    killed.communicate(timeout=120)
    assert killed.returncode == 9
    _finish(_start(tmp_path, config, "w0" if same_id else "w1", **env))
    calls = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    first, rest = calls[0], calls[1:]
    runs, finals = _trained(tmp_path)
    study = _check_study(storage, [r for c in rest if "final" not in c["workdir"] for r in c["runs"]])
    assert len(finals) == 1
    if same_id:  # restarted under its id: it resumes its own batch, in the same batch directory
        assert rest[0]["workdir"] == first["workdir"] and rest[0]["runs"] == first["runs"]
        assert not any(search_storage.STALE in t.user_attrs for t in study.trials)
    else:  # a new worker: the dead one's trials failed as stale and retrained once, with the same parameters
        stale = [t for t in study.trials if search_storage.STALE in t.user_attrs]
        assert sorted(t.number for t in stale) == [r["trial"] for r in first["runs"]]
        retries = {t.user_attrs[search_storage.RETRY_OF]: t for t in study.trials
                   if search_storage.RETRY_OF in t.user_attrs}
        assert all(retries[t.number].params == t.params and retries[t.number].value is not None for t in stale)


def test_a_search_started_before_shared_storages_resumes_as_before(tmp_path, monkeypatch):
    """A study written by an older mcjax: trials without owners or kept results, its batch 2–3 interrupted."""
    from mcjax.train import search, sweep

    config = _search_config("")
    suggest = {n: search.parse_space_entry(n, t) for n, t in dict(config.search.space).items()}
    study = optuna.create_study(study_name="mcjax", storage=f"sqlite:///{tmp_path / 'study.db'}")
    asked = [study.ask() for _ in range(4)]
    params = [{n: fn(t) for n, fn in suggest.items()} for t in asked]
    (tmp_path / "batches" / "00000").mkdir(parents=True)
    old = [{"trial": i, "seed": 0, "mse": [0.1 + i] * 10, "mse_mean": 0.1 + i, "mse_many_z": [0.1 + i] * 10}
           for i in (0, 1)]
    (tmp_path / "batches" / "00000" / "eval.json").write_text(json.dumps({"runs": old}))
    for i in (0, 1):
        study.tell(i, 0.1 + i)
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(tmp_path / "log"))
    monkeypatch.setattr(sweep, "train_and_evaluate", fake_train)
    monkeypatch.setattr(search, "plot_history", lambda study, path: None)
    monkeypatch.setattr(search, "plot_importances", lambda study, path: None)
    search.run_search(config, str(tmp_path))
    calls = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert [c["workdir"].split("/")[-1] for c in calls] == ["00002", "00004", "00006", "final"]
    assert [r["trial"] for r in calls[0]["runs"]] == [2, 3]  # the interrupted batch, resumed first
    assert {k: calls[0]["runs"][0][k] for k in ("learning_rate", "beta")} == \
        {k: params[2][k] for k in ("learning_rate", "beta")}
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["trial"] for r in rows] == list(range(8)) and rows[0]["mse_mean"] == 0.1  # older rows from eval.json


def test_workers_of_a_different_experiment_are_refused(tmp_path):
    """The first worker stores its config; a worker whose config differs beyond the resumable fields is stopped,
    naming the fields, before it trains anything into the shared study."""
    config = _search_config(f"journal:///{tmp_path / 'study.log'}")
    backend = search_storage.open_storage(config.search.storage)
    study = optuna.create_study(study_name=config.search.study_name, storage=backend, load_if_exists=True)
    search_storage.check_same_experiment(backend, study, config)  # the first worker: stores it
    config.search.heartbeat_s = 5.0  # resumable: a worker may beat at its own pace
    search_storage.check_same_experiment(backend, study, config)
    config.train.seed, config.search.num_trials = 7, 9
    with pytest.raises(InputError, match=r"differs in search\.num_trials, train\.seed\)"):
        search_storage.check_same_experiment(backend, study, config)


def _trial(number, state="COMPLETE", fixed=False, **user_attrs):
    from types import SimpleNamespace

    return SimpleNamespace(number=number, state=optuna.trial.TrialState[state], user_attrs=user_attrs,
                           system_attrs={"fixed_params": {}} if fixed else {})


def test_sampled_trials_are_counted_and_ranked_apart_from_retries_and_grid_points():
    stale = _trial(1, "FAIL", **{search_storage.STALE: "w1"})
    trials = [_trial(0), stale, _trial(2, "WAITING", fixed=True, **{search_storage.RETRY_OF: 1}), _trial(3),
              _trial(4, fixed=True)]  # 4: a grid point
    assert search_storage.sampled_count(trials, num_trials=5) == 3 and search_storage.sampled_count(trials, 2) == 2
    assert search_storage.fresh_rank(trials, 3) == 2  # 0 and the stale 1 hold the first two places
    assert search_storage.orphans(trials) == [] and not search_storage.is_quiet(trials)  # the retry still waits
    assert search_storage.orphans([_trial(0), stale]) == [stale]  # failed, retry not enqueued yet: not quiet
    assert search_storage.is_quiet([_trial(0), stale, _trial(2, fixed=True, **{search_storage.RETRY_OF: 1})])


def test_an_enqueued_trial_popped_by_two_workers_is_trained_by_one(tmp_path):
    """On SQLite two workers' ``ask()`` can both pop one waiting trial; the trial's claim picks exactly one of them,
    through separate connections to the database as separate processes would have."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    backends = [search_storage.open_storage(url) for _ in range(2)]
    studies = [optuna.create_study(study_name="mcjax", storage=b, load_if_exists=True) for b in backends]
    studies[0].enqueue_trial({"beta": 0.5})
    number = studies[0].ask().number
    claims = [search_storage.claim_trial(backends[i], studies[i], number, f"w{i}") for i in range(2)]
    assert claims == [True, False]
    assert not search_storage.claim_trial(backends[1], studies[1], number, "w1")  # and stays theirs
    assert search_storage.claim_trial(backends[1], studies[1], number + 1, "w1")  # other trials are free


def test_a_worker_is_silent_after_its_grace_period():
    attrs = {search_storage.HEARTBEAT + "w0": 100.0}
    assert not search_storage.is_silent(attrs, "w0", 0.0, grace_s=5, now=104.0)
    assert search_storage.is_silent(attrs, "w0", 0.0, grace_s=5, now=106.0)
    assert not search_storage.is_silent(attrs, "w9", since=103.0, grace_s=5, now=106.0)  # no beat yet: started 103


@pytest.mark.parametrize("url,message", [
    ("postgres ql://x", "is not a storage URL"),
    ("foo://host/db", "unknown scheme 'foo'"),
    ("journal://", "no journal file"),
    ("journal:///no/such/dir/study.log", "cannot open the journal file"),
    ("sqlite:////no/such/dir/study.db", "cannot reach the database"),
])
def test_unusable_storage_urls_say_why(url, message):
    with pytest.raises(InputError, match=message):
        search_storage.open_storage(url)


@pytest.mark.parametrize("error", ["OperationalError", "ProgrammingError", "IntegrityError"])
def test_a_worker_that_loses_the_race_to_make_the_tables_retries(monkeypatch, tmp_path, error):
    """Workers starting together on an empty database: one creates Optuna's tables, the others see "already exists"
    (or a duplicate row) and open the storage again; other errors are not retried."""
    import sqlalchemy

    calls, opened = [], object()

    def storage(url, engine_kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise getattr(sqlalchemy.exc, error)("CREATE TABLE trial_values", {}, Exception(
                "table trial_values already exists" if error != "IntegrityError" else "UNIQUE constraint failed"))
        return opened

    monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
    monkeypatch.setattr(search_storage.time, "sleep", lambda s: None)
    url = f"sqlite:///{tmp_path}/study.db"
    assert search_storage.open_storage(url) is opened and len(calls) == 2

    def refused(url, engine_kwargs):
        calls.append(url)
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("unable to open database file"))

    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", refused)
    with pytest.raises(InputError, match="cannot reach the database \\(unable to open database file\\)"):
        search_storage.open_storage(url)
    assert len(calls) == 1


def test_missing_driver_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymysql", None)  # as if not installed
    with pytest.raises(InputError, match=r"'pymysql' is not installed \(pip install PyMySQL\)"):
        search_storage.open_storage("mysql+pymysql://u:secret@127.0.0.1:1/db")


def test_unreachable_database_fails_fast_and_hides_the_password():
    pytest.importorskip("psycopg")
    with pytest.raises(InputError, match=r"u:\*\*\*@127.0.0.1:1/db: cannot reach the database") as error:
        search_storage.open_storage("postgresql://u:secret@127.0.0.1:1/db", connect_timeout_s=2)
    assert "secret" not in str(error.value)


def test_cli_prints_a_storage_error_as_one_line(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config",
                             "configs/geobiked_vae_search.py", "--workdir", str(tmp_path),
                             "--config.search.storage=foo://host/db"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: search.storage foo://host/db: unknown scheme")


@pytest.mark.slow  # ≈ 3.5 min on 2 busy cores: two train.py workers training for real, then the final seed
def test_two_train_py_workers_on_one_journal(tmp_path, compilation_cache):
    small = ["--config.search.num_trials=4", "--config.search.trials_per_batch=2", "--config.search.startup_trials=2",
             "--config.search.space.epochs=int:1:2", "--config.search.space.hidden_0=int:8:16",
             "--config.search.grid.learning_rate=(1.0,)", "--config.search.grid.beta=(1.0,)",
             "--config.search.final_seeds=(0,)", "--config.search.heartbeat_s=1", "--config.data.train_size=256",
             "--config.eval.num_draws=2", "--config.eval.energy_draws=4", "--config.eval.class_samples=32",
             f"--config.search.storage=journal:///{tmp_path / 'study.log'}",
             f"--config.compilation_cache_dir={compilation_cache}"]
    workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "--config",
                                 "configs/geobiked_vae_search.py", "--workdir", str(tmp_path / f"w{i}"), *small],
                                cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [_finish(w, timeout_s=600) for w in workers]
    study = optuna.load_study(study_name="mcjax", storage=search_storage.open_storage(
        f"journal:///{tmp_path / 'study.log'}"))
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 5  # 4 sampled + the 1-point grid
    batches = sorted(p.name for w in ("w0", "w1") if (tmp_path / w / "batches").exists()
                     for p in (tmp_path / w / "batches").iterdir())
    assert len(batches) == len(set(batches)) and len(batches) >= 3
    reports = [w for w in ("w0", "w1") if (tmp_path / w / "results.json").exists()]
    assert len(reports) == 1 and len(json.loads((tmp_path / reports[0] / "results.json").read_text())["rows"]) == 5
    assert sum("final evaluation and report by worker" in out for out in outputs) == 1
