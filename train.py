"""Train and evaluate the job a config names (``config.job``: mcvae | search | ldm | first_stage).

    python train.py --config configs/geobiked_vae.py --workdir runs/geobiked_vae [--config.train.seed=1 ...]
    python train.py --config configs/geobiked_ldm.py:smoke --workdir runs/ldm_smoke
    python train.py --export --workdir W        # the inference bundle of a run trained by an older mcjax

Several hosts: start one process per host with --coordinator_address, --num_processes and --process_id (or the
MCJAX_* variables, or --distributed_auto under SLURM / Open MPI / Kubernetes / TPU pods). Bad input prints one line,
``error: ...``, and exits with status 2 (MCJAX_TRACEBACK=1 shows the traceback).
"""

import os

from mcjax import runtime  # light: JAX is not loaded yet

if __name__ == "__main__":
    runtime.restart_with_fast_malloc()  # before JAX loads, so it is imported once (mcjax/runtime.py)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import mcjax.api as mc  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, metrics and eval.json go; resumes if present.")
flags.DEFINE_bool("export", False, "Only write the inference bundle of the finished run in --workdir (no --config).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-process run.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.DEFINE_bool("distributed_auto", False, "Let JAX find a cluster launcher's settings (SLURM, Open MPI, ...).")
FLAGS = flags.FLAGS


@runtime.exit_on_input_errors
def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-checkpoint INFO lines out of the output
    # One host device per core: a sweep splits its runs over them (mcjax.train.sweep.run_mesh).
    runtime.set_host_device_count(os.cpu_count())
    runtime.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                   auto=FLAGS.distributed_auto)
    if FLAGS.export:
        print(f"wrote {mc.export_run(FLAGS.workdir)}")
        return
    if FLAGS.config is None:
        raise app.UsageError("--config is required (or --export with the --workdir of a finished run).")
    runtime.set_xla_flags_for_job(FLAGS.config.get("job", ""))
    runtime.enable_compilation_cache(FLAGS.config.get("compilation_cache_dir", ""))
    mc.run_job(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
