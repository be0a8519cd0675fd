"""Generate designs from a trained run with any subset of its conditions (mcVAE keypoints or mcLDM images).

    python sample.py --workdir runs/geobiked_vae --condition BikeStyle=BMX --num_samples 8 --output_dir samples/
    python sample.py --workdir runs/geobiked_ldm --condition BikeStyle=BMX --num_samples 8 --output_dir samples/ \
        [--num_steps 50 --guidance_scale 2.0 --sampler ddim --eta 0.0]

mcVAE runs write samples.csv and samples.png; mcLDM runs write sample_000.png … and the grid samples.png. The
sampler flags default to the run's config.eval values.
"""

import json

from mcjax import host_malloc  # light: JAX is not loaded yet

if __name__ == "__main__":
    host_malloc.restart_with_fast_malloc()  # before JAX loads, so it is imported once (see train.py)

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from mcjax import ldm_sampling, sampling  # noqa: E402
from mcjax.train import ldm_pipeline  # noqa: E402

flags.DEFINE_string("workdir", None, "Workdir of a finished train.py run.")
flags.DEFINE_multi_string("condition", [], "NAME=VALUE, repeatable; conditions not given are missing.")
flags.DEFINE_integer("num_samples", 8, "Number of designs to generate.")
flags.DEFINE_string("output_dir", "samples", "Where the samples go.")
flags.DEFINE_integer("run_index", 0, "Which run of an mcVAE sweep to sample from.")
flags.DEFINE_integer("seed", 0, "PRNG seed of the prior draws.")
flags.DEFINE_enum("sampler", None, list(ldm_sampling.SAMPLERS), "mcLDM: DDIM (few steps) or DDPM (all T steps).")
flags.DEFINE_integer("num_steps", None, "mcLDM: DDIM steps.")
flags.DEFINE_float("eta", None, "mcLDM: DDIM eta (0 deterministic given the noise, 1 DDPM-like).")
flags.DEFINE_float("guidance_scale", None, "mcLDM: classifier-free guidance s in eps_u + s (eps_c - eps_u); "
                   "1 = none. 'Unconditional' masks every condition, so guidance applies to the given ones.")
flags.DEFINE_integer("batch_size", 64, "mcLDM: images per compiled batch.")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def sample_vae():
    run = sampling.load_run(FLAGS.workdir, FLAGS.run_index)
    given = sampling.parse_conditions(FLAGS.condition, run.stats.conditions.names)
    designs = sampling.generate(run, given, FLAGS.num_samples, jax.random.key(FLAGS.seed))
    return sampling.write_samples(run, designs, given, FLAGS.output_dir)


def sample_ldm(eval_config: dict):
    run = ldm_pipeline.load_ldm_run(FLAGS.workdir)
    given = sampling.parse_conditions(FLAGS.condition, run.stats.conditions.names)
    chosen = {"sampler": FLAGS.sampler, "num_steps": FLAGS.num_steps, "eta": FLAGS.eta,
              "guidance_scale": FLAGS.guidance_scale}
    settings = ldm_sampling.SamplerSettings(
        **{name: eval_config[name] if value is None else value for name, value in chosen.items()}).validated()
    conditions = jax.device_get(run.stats.conditions.encode(given, FLAGS.num_samples))
    images = ldm_sampling.generate_for_rows(run, conditions, jax.random.key(FLAGS.seed), settings, FLAGS.batch_size)
    return ldm_sampling.write_samples(images, FLAGS.output_dir)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.num_samples < 1:
        raise app.UsageError("--num_samples must be >= 1.")
    config = json.loads(sampling.read_workdir_file(FLAGS.workdir, "config.json"))
    paths = sample_ldm(config["eval"]) if config.get("model_type") == "ldm" else sample_vae()
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
