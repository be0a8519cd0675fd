"""Generate designs from a trained run with any subset of its conditions.

    python sample.py --workdir runs/geobiked_vae --condition BikeStyle=BMX --num_samples 8 --output_dir samples/
"""

import jax
from absl import app, flags, logging

from mcjax import sampling

flags.DEFINE_string("workdir", None, "Workdir of a finished train.py run.")
flags.DEFINE_multi_string("condition", [], "NAME=VALUE, repeatable; conditions not given are missing.")
flags.DEFINE_integer("num_samples", 8, "Number of designs to generate.")
flags.DEFINE_string("output_dir", "samples", "Where samples.csv and samples.png go.")
flags.DEFINE_integer("run_index", 0, "Which run of a sweep to sample from.")
flags.DEFINE_integer("seed", 0, "PRNG seed of the prior draws.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.num_samples < 1:
        raise app.UsageError("--num_samples must be >= 1.")
    run = sampling.load_run(FLAGS.workdir, FLAGS.run_index)
    given = sampling.parse_conditions(FLAGS.condition, run.stats.conditions.names)
    designs = sampling.generate(run, given, FLAGS.num_samples, jax.random.key(FLAGS.seed))
    for path in sampling.write_samples(run, designs, given, FLAGS.output_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
