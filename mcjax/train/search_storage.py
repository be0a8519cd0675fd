"""Where a search's Optuna study lives, and how several workers share it without training a trial twice.

``search.storage`` is an Optuna storage URL: ``sqlite:///path``, ``postgresql://...``, ``mysql+pymysql://...``
(``optuna.storages.RDBStorage`` through SQLAlchemy) or ``journal:///path`` (``JournalStorage(JournalFileBackend)``,
a log file on a shared file system); empty means ``sqlite:///W/study.db``, one worker, as before. The protocol uses
only what every Optuna storage makes atomic — a trial's number, a finished trial refusing a second state change, a
study name being taken once:

- **Claims.** A worker asks its batch and tags each trial with its id (``mcjax_worker``). Fresh trials are ranked by
  number; one ranked at or beyond ``search.num_trials`` (two workers asked the last ones at once) is failed as
  surplus before training, so the study never holds more than the requested trials. An enqueued trial (a grid point,
  a retry) is trained by the worker that creates the study ``<study>:trial:<number>``: on SQLite, two workers'
  ``ask()`` can pop the same waiting trial.
- **Liveness.** Each worker writes a heartbeat (a study user attribute, wall time) every ``search.heartbeat_s``;
  Optuna's own heartbeat is RDB-only, this one works on a journal too. A running trial whose owner has been silent
  for ``STALE_HEARTBEATS`` beats is stale: the worker that wins its RUNNING → FAIL transition enqueues it again with
  the same parameters (``mcjax_retry_of``), and whichever worker asks next trains it. A worker restarted under the
  same id (``MCJAX_SEARCH_WORKER``, or ``local`` for the default storage) resumes its own running batch, checkpoints
  included.
- **One experiment.** The worker that creates ``<study>:config`` stores its config there; every worker compares its
  own with it and stops, naming the fields that differ, rather than mixing trials of two experiments in one study.
- **Once-only stages.** The grid and the final evaluation are each run by the worker that creates the study
  ``<study>:<stage>:<generation>``; if that worker goes silent before the stage is marked done, the next generation
  can be taken.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import threading
import time
import zlib

from mcjax import run_dir
from mcjax.errors import InputError

LOCAL_WORKER = "local"  # the worker id of a search on its default storage (one process, resumes its own batch)
STALE_HEARTBEATS = 5  # a worker silent this many heartbeats is presumed dead
WORKER, RETRY_OF, STALE, SURPLUS, RESULT = "mcjax_worker", "mcjax_retry_of", "mcjax_stale", "mcjax_surplus", \
    "mcjax_result"
CONFIG = "mcjax_config"  # the user attribute of the study ``<study>:config`` holding the experiment's config
HEARTBEAT = "mcjax_heartbeat:"  # + worker id: the study user attribute holding its last beat
# Import name of a database driver → the pip package that provides it.
_DRIVERS = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pymysql": "PyMySQL",
            "MySQLdb": "mysqlclient", "mysql": "mysql-connector-python", "pg8000": "pg8000", "asyncpg": "asyncpg"}


def storage_url(search, workdir: str) -> str:
    return search.storage or f"sqlite:///{os.path.join(workdir, 'study.db')}"


def worker_id(search) -> str:
    """``MCJAX_SEARCH_WORKER`` (a stable id lets a restarted worker resume its own batch), else ``local`` on the
    default storage, else host and process id (unique: a restarted worker's batch is retried by anyone)."""
    return os.environ.get("MCJAX_SEARCH_WORKER") or (
        LOCAL_WORKER if not search.storage else f"{socket.gethostname()}-{os.getpid()}")


def sampler_seed(seed: int, worker: str) -> int:
    """The search's seed on one worker; other workers draw other trials (the same seed would repeat them)."""
    return seed if worker == LOCAL_WORKER else zlib.crc32(f"{seed}:{worker}".encode())


def open_storage(url: str, connect_timeout_s: int = 10):
    """The Optuna storage behind ``url``; a malformed or unknown URL, a missing driver or an unreachable database is
    an ``InputError`` naming the problem."""
    import optuna

    if url.startswith("journal://"):
        path = url[len("journal://"):]
        if not path:
            raise InputError(f"search.storage {url!r}: no journal file; expected journal:///path/to/study.log.")
        try:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        except OSError as e:
            raise InputError(f"search.storage {url!r}: cannot open the journal file ({e.strerror or e}).") from None
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise InputError(f"search.storage {url!r} is not a storage URL; expected sqlite:///path, "
                         f"postgresql://user:password@host/db, mysql+pymysql://... or journal:///path.") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except sqlalchemy.exc.NoSuchModuleError:
        raise InputError(f"search.storage {shown}: unknown scheme {parsed.drivername!r}; expected sqlite, "
                         f"postgresql, mysql(+driver) or journal.") from None
    except ImportError as e:
        package = _DRIVERS.get((e.name or "").split(".")[0], e.name)
        raise InputError(f"search.storage {shown}: the database driver {e.name!r} is not installed "
                         f"(pip install {package}).") from None
    connect_args = {"connect_timeout": connect_timeout_s} if parsed.get_backend_name() in ("postgresql", "mysql") \
        else {}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args})
        except sqlalchemy.exc.SQLAlchemyError as e:
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            if attempt < 2 and _lost_the_race_to_make_tables(e, reason):
                time.sleep(1.0)
                continue
            raise InputError(f"search.storage {shown}: cannot reach the database ({reason}).") from None


def _lost_the_race_to_make_tables(error, reason: str) -> bool:
    """Whether another worker, starting on the same empty database, created Optuna's tables or its first rows while
    this one did: a duplicate row, or a table that "already exists" (SQLite and MySQL, an OperationalError;
    PostgreSQL, a ProgrammingError)."""
    import sqlalchemy

    return isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in reason


# --- liveness


@contextlib.contextmanager
def heartbeat(study, worker: str, interval_s: float):
    """Writes this worker's beat now and then every ``interval_s`` from a daemon thread, while the block runs."""
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a transient storage error must not silence the worker for good
                study.set_user_attr(HEARTBEAT + worker, time.time())
            if stop.wait(interval_s):
                return

    study.set_user_attr(HEARTBEAT + worker, time.time())
    thread = threading.Thread(target=beat, name="mcjax-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def owner(trial) -> str:
    return trial.user_attrs.get(WORKER, LOCAL_WORKER)  # trials of searches older than this protocol: local


def is_silent(study_attrs: dict, worker: str, since: float, grace_s: float, now: float) -> bool:
    """Whether ``worker`` has written no beat for ``grace_s`` (``since``: when it was last known alive anyway)."""
    return now - max(study_attrs.get(HEARTBEAT + worker, 0.0), since) > grace_s


def stale_trials(study, worker: str, grace_s: float) -> list:
    """Other workers' running trials whose owner is silent."""
    from optuna.trial import TrialState

    attrs, now = study.user_attrs, time.time()
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if owner(t) != worker and is_silent(attrs, owner(t), t.datetime_start.timestamp(), grace_s, now)]


def set_trial_attr(study, trial, key: str, value) -> bool:
    """A user attribute on a trial of the study (any worker's); False if the trial finished meanwhile."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
        return True
    except UpdateFinishedTrialError:
        return False


def fail(study, number: int) -> bool:
    """RUNNING → FAIL; True only for the one worker whose change took effect."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        study.tell(number, state=TrialState.FAIL)
        return True
    except (UpdateFinishedTrialError, ValueError):  # another worker finished it first
        return False


def retry_stale(study, worker: str, grace_s: float) -> list[int]:
    """Fails each stale trial and enqueues it again, with the same parameters; returns the trials retried."""
    retried = []
    for trial in stale_trials(study, worker, grace_s):
        if set_trial_attr(study, trial, STALE, worker) and fail(study, trial.number):
            enqueue_retry(study, trial)
            retried.append(trial.number)
    return retried


def enqueue_retry(study, trial) -> None:
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.user_attrs.get(RETRY_OF, trial.number)})


def orphans(trials) -> list:
    """Stale-failed trials without a retry yet (the winner enqueues it right after failing them)."""
    retried = {(t.user_attrs[RETRY_OF], t.number) for t in trials if RETRY_OF in t.user_attrs}
    return [t for t in trials if STALE in t.user_attrs
            and not any(root == t.user_attrs.get(RETRY_OF, t.number) and n > t.number for root, n in retried)]


# --- trial kinds


def is_fresh(trial) -> bool:
    """Asked from the sampler (not an enqueued grid point or retry)."""
    return "fixed_params" not in trial.system_attrs


def fresh_rank(trials, number: int) -> int:
    return sum(1 for t in trials if is_fresh(t) and t.number < number)


def sampled_count(trials, num_trials: int) -> int:
    """How many of the ``num_trials`` sampler trials exist (surplus ones are not counted)."""
    return min(sum(1 for t in trials if is_fresh(t)), num_trials)


def is_quiet(trials) -> bool:
    """No trial running, waiting or about to be retried: the results so far are final."""
    from optuna.trial import TrialState

    return not orphans(trials) and all(t.state not in (TrialState.RUNNING, TrialState.WAITING) for t in trials)


# --- once-only stages


def claim_stage(storage, study, stage: str, worker: str, grace_s: float) -> bool:
    """True for exactly one live worker per stage: creating a study name is atomic on every Optuna storage."""
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    for generation in itertools.count():
        name = f"{study.study_name}:{stage}:{generation}"
        try:
            lock = storage.create_new_study([StudyDirection.MINIMIZE], name)
        except DuplicatedStudyError:
            holder = storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(WORKER)
            if holder == worker:
                return True
            if holder is None or not is_silent(study.user_attrs, holder, 0.0, grace_s, time.time()):
                return False
            continue  # its holder died before the stage was done: take the next generation
        storage.set_study_user_attr(lock, WORKER, worker)
        return True


def claim_trial(storage, study, number: int, worker: str) -> bool:
    """True for exactly one worker per enqueued trial. Optuna pops a waiting trial by reading, then writing its state,
    which two workers on SQLite can both do; creating a study name is atomic. A holder that dies leaves the trial
    running, and ``retry_stale`` retries it as a new trial."""
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    try:
        lock = storage.create_new_study([StudyDirection.MINIMIZE], f"{study.study_name}:trial:{number}")
    except DuplicatedStudyError:
        return False
    storage.set_study_user_attr(lock, WORKER, worker)
    return True


def check_same_experiment(storage, study, config, timeout_s: float = 60.0) -> None:
    """Stores ``config`` as the study's experiment if this worker is the first, else checks it equals the stored one
    (up to ``mcjax.run_dir.RESUMABLE_FIELDS``): an ``InputError`` names the fields that differ."""
    from optuna.exceptions import DuplicatedStudyError
    from optuna.study import StudyDirection

    name = f"{study.study_name}:config"
    try:
        holder = storage.create_new_study([StudyDirection.MINIMIZE], name)
        storage.set_study_user_attr(holder, CONFIG, config.to_json())
        return
    except DuplicatedStudyError:
        holder = storage.get_study_id_from_name(name)
    deadline = time.time() + timeout_s
    while (stored := storage.get_study_user_attrs(holder).get(CONFIG)) is None:
        if time.time() > deadline:  # its creator died between creating it and storing the config
            raise InputError(f"Search study {study.study_name!r}: {name!r} holds no config after {timeout_s:g} s; "
                             f"delete that study from the storage and start again.")
        time.sleep(0.2)
    changed = run_dir.changed_fields(json.loads(stored), config)
    if changed:
        raise InputError(f"Search study {study.study_name!r} is shared by workers of a different experiment "
                         f"(their config differs in {', '.join(changed)}); give this search its own "
                         f"search.study_name or use the same config.")
