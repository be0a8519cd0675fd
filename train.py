"""Train and evaluate a model described by an ml-collections config.

    python train.py --config configs/geobiked_vae.py --workdir runs/geobiked_vae [--config.train.seed=1 ...]
"""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    # One host device per core, set before JAX starts: a sweep splits its runs over them (mcjax.train.experiment).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={os.cpu_count()}").strip()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import mcjax  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file (get_config()).", lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, metrics and eval.json go; resumes if present.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-checkpoint INFO lines out of the output
    config = flags.FLAGS.config
    if "search" in config:
        mcjax.run_search(config, flags.FLAGS.workdir)
    else:
        mcjax.train_and_evaluate(config, flags.FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
