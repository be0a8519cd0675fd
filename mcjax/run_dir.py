"""The run directory (workdir): what training writes there, and what generation reads back.

Layout common to every job:
- ``config.json``, ``stats.json``: the config and the training-split statistics, written when training starts; a
  later run on the same workdir must have the same config up to the fields in ``RESUMABLE_FIELDS``.
- ``checkpoints/``: orbax checkpoints of whole training states (written atomically: a temporary directory renamed when
  complete), restored into an abstract target so structure, shapes and dtypes are checked.
- ``metrics.jsonl``, ``tensorboard/``, ``eval.json`` and the job's reports.
- ``inference/``: the bundle generation reads, written when training ends: ``manifest.json`` (the job and what its
  loader needs), ``config.json``, ``stats.json`` and weights as safetensors. It appears only when complete, so a
  bundle that exists is whole; ``sample.py`` and the loaders in ``mcjax.generate`` read nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from mcjax.errors import InputError
from mcjax.io import atomic_write_text

CONFIG, STATS, CHECKPOINTS, BUNDLE, MANIFEST = "config.json", "stats.json", "checkpoints", "inference", "manifest.json"
BUNDLE_FORMAT = 1
# Fields that may change between a run and its resumption (they do not change the result).
RESUMABLE_FIELDS = {("train", "epochs_per_chunk"), ("train", "checkpoint_every_epochs"), ("train", "progress"),
                    ("train", "tensorboard"), ("eval",), ("report",), ("compilation_cache_dir",),
                    ("train", "steps_per_chunk"), ("train", "log_every_steps"), ("train", "checkpoint_every_steps"),
                    ("first_stage", "steps_per_chunk"), ("first_stage", "latent_batch_size"),
                    ("judge",),  # the judge scores a run; W/judge/key retrains it when its settings change
                    ("refine",), ("search", "heartbeat_s"), ("search", "storage")}  # a host may move between restarts


def _comparable(config_dict: dict, prefix=()) -> dict:
    out = {}
    for key, value in config_dict.items():
        path = prefix + (key,)
        if any(path[: len(r)] == r for r in RESUMABLE_FIELDS):
            continue
        out.update(_comparable(value, path) if isinstance(value, dict) else {path: value})
    return out


def changed_fields(stored_config: dict, config: ml_collections.ConfigDict) -> list[str]:
    """The dotted fields in which ``config`` is a different experiment from ``stored_config`` (a config's dict)."""
    stored = _comparable(upgrade_config(stored_config))
    current = _comparable(upgrade_config(json.loads(config.to_json())))  # configs built in code may be partial
    return sorted(".".join(k) for k in set(stored) | set(current) if stored.get(k) != current.get(k))


def check_same_run(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuses to resume a workdir that holds a different experiment."""
    path = os.path.join(workdir, CONFIG)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        changed = changed_fields(json.load(f), config)
    if changed:
        raise InputError(f"Workdir {workdir} holds a run with a different config ({', '.join(changed)}); "
                         f"train into a new workdir or restore those values.")


def sync_processes(name: str) -> None:
    """Waits for every process of a multi-process run (process 0 writes the shared files, the others read them)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def start(workdir: str, config: ml_collections.ConfigDict, stats_json: str | None = None) -> None:
    """Creates the workdir (or checks that it holds this run) and writes its config and statistics."""
    os.makedirs(workdir, exist_ok=True)
    check_same_run(workdir, config)
    if jax.process_index() == 0:
        atomic_write_text(os.path.join(workdir, CONFIG), config.to_json(indent=1))
        if stats_json is not None:
            atomic_write_text(os.path.join(workdir, STATS), stats_json)
    sync_processes("workdir")


def read_text(workdir: str, name: str) -> str:
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir} the workdir of a training run?")
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with, in today's field names (see ``upgrade_config``)."""
    return ml_collections.ConfigDict(upgrade_config(json.loads(read_text(workdir, CONFIG))))


# Fields added since mcjax 0.2, per job, at the values that reproduce what such a run did.
_TABLE = {("data", "categorical_na_values"): []}  # categorical labels were never missing
_MASKING = {("train", "sparsity_target"): "observed"}
_SHARED_STUDY = {("search", "storage"): "", ("search", "study_name"): "mcjax", ("search", "heartbeat_s"): 30.0}
_IMAGES = {("data", "image_column"): "", ("data", "image_fit"): "pad", ("data", "skip_unreadable_images"): False,
           ("data", "decode_workers"): 0, ("data", "max_device_latent_bytes"): 4 * 2**30,
           ("first_stage", "max_train_images"): 0}
_ADDED_SINCE_0_2 = {"mcvae": _TABLE | _MASKING, "search": _TABLE | _MASKING | _SHARED_STUDY,
                    "first_stage": _TABLE | _IMAGES,
                    "ldm": _TABLE | _MASKING | _IMAGES | {("model", "layout"): "mcjax"}}  # one U-Net layout


def upgrade_config(config: dict) -> dict:
    """A stored config in today's names: workdirs of mcjax 0.1 named the job ``model_type`` (and a ``search`` block
    made it a search) and split the first stage into ``vae.pretrained`` and ``autoencoder``; the fields added since
    mcjax 0.2 get the values that reproduce what such a run did."""
    config = dict(config)
    if "job" not in config:
        model_type = config.pop("model_type", "vae")
        config["job"] = "search" if "search" in config else {"vae": "mcvae", "autoencoder": "first_stage"}.get(
            model_type, model_type)
    if "autoencoder" in config or "vae" in config:
        config["first_stage"] = {"pretrained": config.pop("vae", {}).get("pretrained", ""),
                                 **config.pop("autoencoder", {})}
    for (block, field), value in _ADDED_SINCE_0_2.get(config["job"], {}).items():
        if block in config and field not in config[block]:
            config[block] = {**config[block], field: value}
    data = config.get("data", {})
    if config["job"] in ("ldm", "first_stage") and data.get("index_column") == "" and not data.get("image_dir"):
        config["data"] = {**config["data"], "index_column": "Bike index"}  # rendered images: the column is unused
    return config


# --- checkpoints of training states


def checkpoint_manager(directory: str, max_to_keep: int = 2):
    """An orbax CheckpointManager over ``directory`` (created if needed)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_checkpoint(checkpoints, step: int, state) -> None:
    """Saves ``state`` under ``step`` and waits, so the state can be donated to the next compiled chunk."""
    import orbax.checkpoint as ocp

    checkpoints.save(int(step), args=ocp.args.StandardSave(state), force=True)
    checkpoints.wait_until_finished()


def restore_latest(checkpoints, abstract_state):
    """The newest checkpoint restored into the structure of ``abstract_state``, or None when there is none."""
    import orbax.checkpoint as ocp

    step = checkpoints.latest_step()
    if step is None:
        return None
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return checkpoints.restore(step, args=ocp.args.StandardRestore(target))


# --- the inference bundle


class Bundle(NamedTuple):
    """What generation needs of a trained run, read from ``W/inference``."""

    directory: str
    manifest: dict  # "job", "format" and the job's own entries
    config: ml_collections.ConfigDict
    stats_json: str

    def weights(self, name: str) -> dict:
        """The nested dict of host arrays saved under ``name``."""
        from safetensors.numpy import load_file

        flat = load_file(os.path.join(self.directory, f"{name}.safetensors"))
        return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def has_bundle(workdir: str) -> bool:
    return os.path.exists(os.path.join(workdir, BUNDLE, MANIFEST))


def has_checkpoints(workdir: str) -> bool:
    return os.path.isdir(os.path.join(workdir, CHECKPOINTS))


def write_bundle(workdir: str, job: str, manifest: dict, weights: dict, config: ml_collections.ConfigDict,
                 stats_json: str) -> str:
    """Writes ``W/inference``: ``weights`` maps a name to a pytree of arrays (nested dicts). Only process 0 writes; the
    directory is renamed into place when complete."""
    directory = os.path.join(workdir, BUNDLE)
    if jax.process_index() == 0:
        from safetensors.numpy import save_file

        tmp = directory + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for name, tree in weights.items():
            flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
            save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, os.path.join(tmp, f"{name}.safetensors"))
        atomic_write_text(os.path.join(tmp, CONFIG), config.to_json(indent=1))
        atomic_write_text(os.path.join(tmp, STATS), stats_json)
        atomic_write_text(os.path.join(tmp, MANIFEST), json.dumps({"format": BUNDLE_FORMAT, "job": job, **manifest},
                                                                  indent=1))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    sync_processes("bundle")
    return directory


def read_bundle(workdir: str, job: str | None = None) -> Bundle:
    """The inference bundle of ``workdir`` (of ``job``, when given)."""
    directory = os.path.join(workdir, BUNDLE)
    if not has_bundle(workdir):
        if has_checkpoints(workdir):
            raise InputError(f"{workdir} has checkpoints but no inference bundle ({directory}): training did not "
                             f"finish, or an older mcjax trained it; mcjax.api.export_run(workdir) writes one.")
        raise FileNotFoundError(f"{directory} not found: is {workdir} the workdir of a finished training run?")
    manifest = json.loads(read_text(directory, MANIFEST))
    if manifest.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{directory} has bundle format {manifest.get('format')}; this mcjax reads {BUNDLE_FORMAT}.")
    if job is not None and manifest["job"] != job:
        raise InputError(f"{workdir} holds a {manifest['job']!r} run, not {job!r}.")
    return Bundle(directory, manifest, read_config(directory), read_text(directory, STATS))
