"""Generate designs from a trained run with any subset of its conditions (mcVAE keypoints or mcLDM images).

    python sample.py --workdir runs/geobiked_vae --condition BikeStyle=BMX --num_samples 8 --output_dir samples/
    python sample.py --workdir runs/geobiked_ldm --condition BikeStyle=BMX --num_samples 8 --output_dir samples/ \
        [--num_steps 50 --guidance_scale 2.0 --sampler ddim --eta 0.0]

Reads only the run's inference bundle (W/inference). mcVAE runs write samples.csv and samples.png; mcLDM runs write
sample_000.png … and the grid samples.png. The sampler flags default to the run's config.eval values. Bad input
prints one line, ``error: ...``, and exits with status 2 (MCJAX_TRACEBACK=1 shows the traceback).
"""

from mcjax import runtime  # light: JAX is not loaded yet

if __name__ == "__main__":
    runtime.restart_with_fast_malloc()  # before JAX loads, so it is imported once (see train.py)

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from mcjax import run_dir  # noqa: E402
from mcjax.conditions import parse_given  # noqa: E402
from mcjax.errors import InputError  # noqa: E402
from mcjax.generate import ldm, mcvae  # noqa: E402
from mcjax.models.ldm import SAMPLERS, SamplerSettings  # noqa: E402

flags.DEFINE_string("workdir", None, "Workdir of a finished train.py run.")
flags.DEFINE_multi_string("condition", [], "NAME=VALUE, repeatable; conditions not given are missing.")
flags.DEFINE_integer("num_samples", 8, "Number of designs to generate.", lower_bound=1)
flags.DEFINE_string("output_dir", "samples", "Where the samples go.")
flags.DEFINE_integer("run_index", 0, "Which run of an mcVAE sweep to sample from.")
flags.DEFINE_integer("seed", 0, "PRNG seed of the prior draws.")
flags.DEFINE_float("temperature", 1.0, "mcVAE: scales the prior's spread (1 = the model's, 0 = its mean).")
flags.DEFINE_enum("sampler", None, list(SAMPLERS), "mcLDM: DDIM (few steps) or DDPM (all T steps).")
flags.DEFINE_integer("num_steps", None, "mcLDM: DDIM steps.")
flags.DEFINE_float("eta", None, "mcLDM: DDIM eta (0 deterministic given the noise, 1 DDPM-like).")
flags.DEFINE_float("guidance_scale", None, "mcLDM: classifier-free guidance s in eps_u + s (eps_c - eps_u); "
                   "1 = none. 'Unconditional' masks every condition, so guidance applies to the given ones.")
flags.DEFINE_integer("batch_size", 64, "mcLDM: images per compiled batch.", lower_bound=1)
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def sample_mcvae():
    run = mcvae.load_run(FLAGS.workdir, FLAGS.run_index)
    given = parse_given(FLAGS.condition, run.stats.conditions.names)
    designs = mcvae.generate(run, given, FLAGS.num_samples, jax.random.key(FLAGS.seed), FLAGS.temperature)
    return mcvae.write_samples(run, designs, given, FLAGS.output_dir)


def sample_ldm(eval_config):
    run = ldm.load_ldm_run(FLAGS.workdir)
    given = parse_given(FLAGS.condition, run.stats.conditions.names)
    chosen = {"sampler": FLAGS.sampler, "num_steps": FLAGS.num_steps, "eta": FLAGS.eta,
              "guidance_scale": FLAGS.guidance_scale}
    settings = SamplerSettings(**{name: eval_config[name] if value is None else value
                                  for name, value in chosen.items()}).validated()
    images = ldm.generate(run, given, FLAGS.num_samples, jax.random.key(FLAGS.seed), settings, FLAGS.batch_size)
    return ldm.write_samples(images, FLAGS.output_dir)


@runtime.exit_on_input_errors
def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not run_dir.has_bundle(FLAGS.workdir) and run_dir.has_checkpoints(FLAGS.workdir):
        raise InputError(f"{FLAGS.workdir} has no inference bundle (an older mcjax trained it, or training did not "
                         f"finish); write one with: python train.py --export --workdir {FLAGS.workdir}")
    bundle = run_dir.read_bundle(FLAGS.workdir)
    runtime.enable_compilation_cache(bundle.config.get("compilation_cache_dir", ""))
    paths = sample_ldm(bundle.config.eval) if bundle.manifest["job"] == "ldm" else sample_mcvae()
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
