"""Hyperparameter search over the Table-1 space: Optuna's TPE sampler asked in batches, each batch one experiment.

A batch of trials becomes an experiment config whose ``sweep.runs`` lists the trials (workdir ``W/batches/<k>``):
trials of different widths train together as width-masked networks (``mcjax.models.layers``), grouped into stages
only by steps per epoch (the batch size). Trials are scored on a validation part of the training split, never on the
test split. The study lives in ``search.storage`` (default ``W/study.db``, SQLite): after an interruption the
search reloads it, finishes the batch that was asked but not told (resuming that batch's checkpoints) and goes on.
Any number of workers may share one storage (``mcjax.train.search_storage``: claims, heartbeats, retries, once-only
stages). An optional grid refinement around the best trial is enqueued as further trials; finally the best
configuration is trained with ``search.final_seeds`` on the full training split and evaluated on the test split
(``W/final``, by one worker).

Writes ``W/results.json`` (one row per trial: hyperparameters, MSE per inference sparsity, objective),
``W/results.md``, ``W/search_history.png`` and ``W/search_importances.png``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time

import ml_collections
import numpy as np

from mcjax import run_dir
from mcjax.errors import InputError
from mcjax.eval import paper, report
from mcjax.io import atomic_write_text
from mcjax.train import search_storage as storage
from mcjax.train import sweep

OBJECTIVES = ("mse_mean", "mse_many_z_mean")  # mean over inference sparsity, reference or many-z protocol
_HIDDEN = "hidden_"  # space entries hidden_0, hidden_1, ... form model.hidden_dims
_RESULT_KEYS = ("seed", "mse", "mse_mean", "mse_many_z")  # kept with each trial (user attribute mcjax_result)
FINAL = "mcjax_final"  # study user attribute: who ran the final evaluation, where, and its summary


def parse_space_entry(name: str, text: str):
    """``"int:16:256[:log]"``, ``"float:1e-4:1e-2[:log]"`` or ``"choice:70,140,280"`` → a suggest function."""
    parts = text.split(":")
    try:
        if parts[0] == "choice" and len(parts) == 2:
            choices = [int(c) if c.strip().lstrip("-").isdigit() else float(c) for c in parts[1].split(",")]
            return lambda trial: trial.suggest_categorical(name, choices)
        if parts[0] in ("int", "float") and len(parts) in (3, 4) and parts[3:] in ([], ["log"]):
            cast = int if parts[0] == "int" else float
            low, high, log = cast(parts[1]), cast(parts[2]), parts[3:] == ["log"]
            if not low <= high:
                raise ValueError
            suggest = "suggest_int" if cast is int else "suggest_float"
            return lambda trial: getattr(trial, suggest)(name, low, high, log=log)
    except ValueError:
        pass
    raise InputError(f"search.space.{name} = {text!r}: expected 'int:LOW:HIGH[:log]', 'float:LOW:HIGH[:log]' or "
                     f"'choice:A,B,...'.")


def trial_run(params: dict) -> dict:
    """A trial's parameters as a ``sweep.runs`` entry (hidden_i → hidden_dims)."""
    hidden = [params[k] for k in sorted((k for k in params if k.startswith(_HIDDEN)), key=lambda k: int(k[7:]))]
    run = {k: v for k, v in params.items() if not k.startswith(_HIDDEN)}
    return run | ({"hidden_dims": tuple(int(h) for h in hidden)} if hidden else {})


def _experiment_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of the search config without its ``search`` block: a plain experiment config."""
    experiment_config = ml_collections.ConfigDict(config.to_dict())
    del experiment_config["search"]
    experiment_config.job = "mcvae"
    return experiment_config


def batch_config(config: ml_collections.ConfigDict, trials: list[tuple[int, dict]]) -> ml_collections.ConfigDict:
    """The experiment config of one batch: the trials as explicit runs, scored on the validation split."""
    batch = _experiment_config(config)
    batch.sweep.runs = tuple({"trial": number, **trial_run(params)} for number, params in trials)
    batch.sweep.seeds = (config.train.seed,)
    batch.data.validation_fraction = config.search.validation_fraction
    batch.train.stop_on_nonfinite = False  # a diverging trial fails alone
    batch.report.paper = ""
    batch.report.title = "search batch"
    return batch


def final_config(config: ml_collections.ConfigDict, params: dict) -> ml_collections.ConfigDict:
    """The best trial on the full training split, evaluated on the test split, one run per final seed."""
    final = _experiment_config(config)
    final.sweep.runs = (trial_run(params),)
    final.sweep.seeds = tuple(config.search.final_seeds)
    final.report.paper = "table1"
    final.report.title = "Best configuration of the search, on the test split"
    return final


def _objective(summary_run: dict, objective: str) -> float:
    value = summary_run["mse_mean"] if objective == "mse_mean" else float(np.mean(summary_run["mse_many_z"]))
    return value if math.isfinite(value) else math.nan


def _grid(config: ml_collections.ConfigDict, best: dict, space: dict) -> list[dict]:
    """Products of multiplicative factors around the best trial's values (``search.grid``: name → factors),
    clipped to the space's bounds."""
    axes = []
    for name, factors in config.search.grid.items():
        if name not in best or space[name].split(":")[0] not in ("int", "float"):
            raise InputError(f"search.grid.{name}: not a numerical parameter of search.space ({sorted(space)}).")
        kind, low, high = space[name].split(":")[:3]
        cast = int if kind == "int" else float
        axes.append([(name, cast(min(max(best[name] * f, cast(low)), cast(high)))) for f in factors])
    points = [best | dict(combo) for combo in itertools.product(*axes)]
    return [p for i, p in enumerate(points) if p not in points[:i]]


def run_search(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The whole search (resumable), as one of any number of workers sharing ``search.storage``; returns the final
    evaluation's summary."""
    import optuna

    search = config.search
    if search.objective not in OBJECTIVES:
        raise InputError(f"search.objective must be one of {OBJECTIVES}, got {search.objective!r}.")
    if search.trials_per_batch < 1 or search.num_trials < 1 or not search.heartbeat_s > 0:
        raise InputError("search.num_trials and search.trials_per_batch must be >= 1, search.heartbeat_s > 0.")
    suggest = {name: parse_space_entry(name, text) for name, text in dict(search.space).items()}
    os.makedirs(workdir, exist_ok=True)
    run_dir.check_same_run(workdir, config)
    atomic_write_text(os.path.join(workdir, "config.json"), config.to_json(indent=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = storage.worker_id(search)
    backend = storage.open_storage(storage.storage_url(search, workdir))
    sampler = optuna.samplers.TPESampler(seed=storage.sampler_seed(search.seed, worker), multivariate=True,
                                         constant_liar=True, n_startup_trials=search.startup_trials)
    study = optuna.create_study(study_name=search.study_name, storage=backend, sampler=sampler,
                                direction="minimize", load_if_exists=True)
    storage.check_same_experiment(backend, study, config)
    with storage.heartbeat(study, worker, search.heartbeat_s):
        _train_trials(config, study, backend, worker, suggest, workdir)
        return _final_stage(config, study, backend, worker, workdir)


def _train_trials(config, study, backend, worker: str, suggest: dict, workdir: str) -> None:
    """Claims and trains batches until the study holds every trial (sampled and grid) finished."""
    from optuna.trial import TrialState

    search, grace_s = config.search, storage.STALE_HEARTBEATS * config.search.heartbeat_s
    said_waiting = False
    while True:
        storage.retry_stale(study, worker, grace_s)
        trials = study.get_trials(deepcopy=False)
        mine = [(t.number, t.params) for t in trials if t.state == TrialState.RUNNING and storage.owner(t) == worker]
        if not mine:  # else: this worker was interrupted in that batch: resume it
            if _grid_due(search, study, trials) and storage.claim_stage(backend, study, "grid", worker, grace_s):
                _enqueue_grid(config, study)
            mine = _ask_batch(backend, study, search, suggest, worker)
        if mine:
            _train_batch(config, study, sorted(mine, key=lambda t: t[0]), workdir)
            continue
        trials = study.get_trials(deepcopy=False)
        if storage.is_quiet(trials) and not _grid_due(search, study, trials) and (
                storage.sampled_count(trials, search.num_trials) >= search.num_trials):
            return
        if not said_waiting:
            print("mcjax search: waiting for other workers' trials", flush=True)
            said_waiting = True
        time.sleep(search.heartbeat_s)


def _grid_due(search, study, trials) -> bool:
    """The sampled trials are all finished and the grid around the best of them is not enqueued yet."""
    return bool(search.grid) and "grid_size" not in study.user_attrs and storage.is_quiet(trials) and (
        storage.sampled_count(trials, search.num_trials) >= search.num_trials)


def _enqueue_grid(config, study) -> None:
    """Enqueues the grid points not enqueued yet (a previous holder of the stage may have died halfway)."""
    grid = _grid(config, study.best_trial.params, dict(config.search.space))
    enqueued = sum(1 for t in study.get_trials(deepcopy=False)
                   if not storage.is_fresh(t) and storage.RETRY_OF not in t.user_attrs)
    for point in grid[enqueued:]:
        study.enqueue_trial(point, skip_if_exists=False)
    study.set_user_attr("grid_size", len(grid))


def _ask_batch(backend, study, search, suggest: dict, worker: str) -> list[tuple[int, dict]]:
    """Up to ``trials_per_batch`` trials for this worker: enqueued ones (retries, grid points) first, then sampled
    ones while fewer than ``num_trials`` exist."""
    from optuna.trial import TrialState

    batch = []
    while len(batch) < search.trials_per_batch:
        trials = study.get_trials(deepcopy=False)
        if (not any(t.state == TrialState.WAITING for t in trials)
                and storage.sampled_count(trials, search.num_trials) >= search.num_trials):
            break
        trial = study.ask()
        asked = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if not storage.is_fresh(asked) and not storage.claim_trial(backend, study, trial.number, worker):
            continue  # an enqueued trial that another worker popped at the same time (SQLite lets both): theirs
        trial.set_user_attr(storage.WORKER, worker)
        trials = study.get_trials(deepcopy=False)
        if storage.is_fresh(asked) and storage.fresh_rank(trials, trial.number) >= search.num_trials:
            trial.set_user_attr(storage.SURPLUS, True)  # another worker asked the last sampled trials meanwhile
            study.tell(trial, state=TrialState.FAIL)
            break
        batch.append((trial.number, {name: fn(trial) for name, fn in suggest.items()}))
    return batch


def _train_batch(config, study, trials: list[tuple[int, dict]], workdir: str) -> None:
    """Trains one batch as one experiment and records each trial's result with its value."""
    from optuna.trial import TrialState

    batch_dir = os.path.join(workdir, "batches", f"{trials[0][0]:05d}")
    print(f"mcjax search: trials {trials[0][0]}–{trials[-1][0]} of {config.search.num_trials}", flush=True)
    summary = sweep.train_and_evaluate(batch_config(config, trials), batch_dir)
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    for (number, _), run in zip(trials, summary["runs"]):
        if not storage.set_trial_attr(study, frozen[number], storage.RESULT, {k: run[k] for k in _RESULT_KEYS}):
            continue  # presumed dead and retried elsewhere meanwhile: that retry's result counts
        value = _objective(run, config.search.objective)
        study.tell(number, None if math.isnan(value) else value,
                   state=TrialState.FAIL if math.isnan(value) else None, skip_if_finished=True)


def _final_stage(config, study, backend, worker: str, workdir: str) -> dict:
    """The best configuration on the test split and the report, by one worker; the others wait for its summary."""
    grace_s = storage.STALE_HEARTBEATS * config.search.heartbeat_s
    while FINAL not in study.user_attrs:
        if storage.claim_stage(backend, study, "final", worker, grace_s):
            best = study.best_trial
            print(f"mcjax search: best trial {best.number} ({config.search.objective} {best.value:.4f} on "
                  f"validation): {best.params}", flush=True)
            final = sweep.train_and_evaluate(final_config(config, best.params), os.path.join(workdir, "final"))
            write_search_report(study, _trial_rows(study, workdir), final, config, workdir)
            study.set_user_attr(FINAL, {"worker": worker, "workdir": os.path.abspath(workdir), "summary": final})
            return final
        time.sleep(config.search.heartbeat_s)
    done = study.user_attrs[FINAL]
    print(f"mcjax search: finished; final evaluation and report by worker {done['worker']} in {done['workdir']}",
          flush=True)
    return done["summary"]


def _trial_rows(study, workdir: str) -> list[dict]:
    """One row per trained trial: its parameters, seed, MSE per level and objective (results kept with the trial;
    searches older than that kept them only in their batch's eval.json)."""
    evaluated = _batch_results(os.path.join(workdir, "batches"))
    rows = []
    for t in study.trials:
        older = storage.WORKER not in t.user_attrs  # asked before workers were tagged
        result = t.user_attrs.get(storage.RESULT) or (evaluated.get(t.number) if older else None)
        if result is not None:
            rows.append({"trial": t.number, **t.params, **{k: result[k] for k in _RESULT_KEYS}, "objective": t.value})
    return rows


def _batch_results(batches: str) -> dict[int, dict]:
    evaluated = {}
    for name in sorted(os.listdir(batches)) if os.path.isdir(batches) else ():
        path = os.path.join(batches, name, "eval.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                evaluated |= {run["trial"]: run for run in json.load(f)["runs"]}
    return evaluated


def write_search_report(study, rows: list[dict], final: dict, config, workdir: str) -> None:
    atomic_write_text(os.path.join(workdir, "results.json"),
                      json.dumps({"inference_sparsity": final["inference_sparsity"], "rows": rows,
                                  "best_trial": study.best_trial.number, "final": final["runs"]}, indent=1))
    ranked = sorted((r for r in rows if r["objective"] is not None), key=lambda r: r["objective"])
    params = [k for k in config.search.space]
    lines = [f"# Hyperparameter search: {len(rows)} trials ({config.search.objective} on a "
             f"{config.search.validation_fraction:g} validation part of the training split)", "",
             "| trial | " + " | ".join(params) + " | objective |", "|---" * (len(params) + 2) + "|"]
    for r in ranked[:10]:
        lines.append(f"| {r['trial']} | " + " | ".join(_format(r[p]) for p in params)
                     + f" | {r['objective']:.4f} |")
    final_mse = np.asarray([run["mse"] for run in final["runs"]])
    lines += ["", f"Best trial {study.best_trial.number} retrained with {len(final_mse)} seed(s) on the full training "
                  f"split, test split (reference protocol): MSE at s = 0 {final_mse[:, 0].mean():.4f} ± "
                  f"{final_mse[:, 0].std():.4f}, mean over s {final_mse.mean(axis=1).mean():.4f} ± "
                  f"{final_mse.mean(axis=1).std():.4f} (the paper's text, Table 1 setting: "
                  f"{paper.PAPER_TEXT['mse_at_0']} / {paper.PAPER_TEXT['mse_mean']})."]
    atomic_write_text(os.path.join(workdir, "results.md"), "\n".join(lines) + "\n")
    plot_history(study, os.path.join(workdir, "search_history.png"))
    plot_importances(study, os.path.join(workdir, "search_importances.png"))


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def plot_history(study, path: str) -> None:
    """Objective per trial and the best so far."""
    done = [t for t in study.trials if t.value is not None]
    numbers, values = [t.number for t in done], [t.value for t in done]
    fig = report.figure(7, 4)
    ax = fig.subplots()
    ax.scatter(numbers, values, s=10, alpha=0.6, label="trial")
    ax.plot(numbers, np.minimum.accumulate(values), color="black", lw=1.5, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (validation MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def plot_importances(study, path: str) -> None:
    """Optuna's parameter importances (PED-ANOVA, its default) as a bar chart."""
    import optuna

    importances = optuna.importance.get_param_importances(study)
    names = list(importances)[::-1]
    fig = report.figure(6, 0.35 * len(names) + 1.2)
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance")
    fig.savefig(path, dpi=120, bbox_inches="tight")
