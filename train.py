"""Train and evaluate a model described by an ml-collections config.

    python train.py --config configs/geobiked_vae.py --workdir runs/geobiked_vae [--config.train.seed=1 ...]
    python train.py --config configs/geobiked_ldm.py:smoke --workdir runs/ldm_smoke

The config's ``model_type`` picks the job: the mcVAE (default; a hyperparameter search when the config has a
``search`` block), ``ldm`` (images → autoencoder → latents → U-Net → evaluation) or ``autoencoder`` (the first stage
alone). Several hosts: start one process per host with --coordinator_address, --num_processes and --process_id (or
the MCJAX_* variables, or --distributed_auto under SLURM / Open MPI / Kubernetes / TPU pods).
"""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # One host device per core, set before JAX starts: a sweep splits its runs over them (mcjax.train.experiment).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={os.cpu_count()}").strip()

import mcjax.host_malloc  # noqa: E402  (light: JAX is not loaded yet)

if __name__ == "__main__":
    # Default mcLDM on CPU: up to 15 % faster (mcjax/host_malloc.py). Before JAX loads, so it is imported once.
    mcjax.host_malloc.restart_with_fast_malloc()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import mcjax  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, metrics and eval.json go; resumes if present.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.DEFINE_bool("distributed_auto", False, "Let JAX find a cluster launcher's settings (SLURM, Open MPI, ...).")
flags.mark_flags_as_required(["config"])

JOBS = {"vae": mcjax.train_and_evaluate, "ldm": mcjax.train_ldm, "autoencoder": mcjax.train_first_stage_only}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-checkpoint INFO lines out of the output
    FLAGS = flags.FLAGS
    mcjax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                 auto=FLAGS.distributed_auto)
    config = FLAGS.config
    model_type = config.get("model_type", "vae")
    if model_type not in JOBS:
        raise app.UsageError(f"Unknown config.model_type {model_type!r}; choose from {sorted(JOBS)}.")
    if "search" in config:
        mcjax.run_search(config, FLAGS.workdir)
    else:
        JOBS[model_type](config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
