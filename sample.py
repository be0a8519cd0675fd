"""Generate designs from a trained run with any subset of its conditions (mcVAE keypoints or mcLDM images).

    python sample.py --workdir runs/geobiked_vae --condition BikeStyle=BMX --num_samples 8 --output_dir samples/
    python sample.py --workdir runs/geobiked_ldm --condition BikeStyle=BMX --num_samples 8 --output_dir samples/ \
        [--num_steps 50 --guidance_scale 2.0 --sampler ddim --eta 0.0] \
        [--refine sdxl --refine_model /models/stable-diffusion-xl-refiner-1.0 --refine_size 1024]

Reads only the run's inference bundle (W/inference). mcVAE runs write samples.csv and samples.png; mcLDM runs write
sample_000.png … and the grid samples.png. The sampler flags default to the run's config.eval values. ``--refine``
(the ``refine`` extra) then refines them with the SDXL refiner or FLUX from local weights, prompted from the given
conditions by the run's config.refine.prompt_template (or --prompt), and adds refined_000.png …, refine.json (prompt
and settings) and the raw and refined rows to samples.png; on one GPU, JAX frees its memory first. Bad input
prints one line, ``error: ...``, and exits with status 2 (MCJAX_TRACEBACK=1 shows the traceback).

    python sample.py --workdir runs/geobiked_ldm --refine sdxl --refine_model DIR --evaluate [--eval_rows 128]

refines the run's test images as its evaluation generates them, one prompt per row from its given conditions, and
scores raw and refined images (W/eval_refined.json, the refined rows of W/results.md; mcjax.generate.refine_eval).
"""

from mcjax import runtime  # light: JAX is not loaded yet

if __name__ == "__main__":
    runtime.restart_with_fast_malloc()  # before JAX loads, so it is imported once (see train.py)

import os  # noqa: E402

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from mcjax import run_dir  # noqa: E402
from mcjax.conditions import parse_given  # noqa: E402
from mcjax.errors import InputError  # noqa: E402
from mcjax.generate import ldm, mcvae, prompts, refine, refine_eval  # noqa: E402
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
flags.DEFINE_enum("refine", None, list(refine.KINDS), "mcLDM: refine the images with the SDXL refiner or FLUX.1 "
                  "(img2img from --refine_model; the 'refine' extra).")
flags.DEFINE_string("refine_model", None, "Folder of the refiner's diffusers weights (sdxl: "
                    "stable-diffusion-xl-refiner-1.0, flux: FLUX.1-dev), or a hub id already in the local cache.")
flags.DEFINE_float("refine_strength", None, "Refiner img2img strength (default: the paper's; sdxl 0.5, flux 0.6).")
flags.DEFINE_float("refine_guidance", None, "Refiner guidance scale (default: the paper's; sdxl 7.5, flux 30).")
flags.DEFINE_integer("refine_steps", None, "Refiner inference steps before strength (default: 50).")
flags.DEFINE_integer("refine_size", 0, "Refine at this square size, e.g. 1024 (0: the mcLDM's size).", lower_bound=0)
flags.DEFINE_string("prompt", None, "The refiner's prompt or template ({NAME} fields are the given conditions); "
                    "overrides the run's config.refine.prompt_template.")
flags.DEFINE_boolean("evaluate", False, "mcLDM with --refine: refine the run's test images at --eval_sparsity and "
                     "score them beside the raw ones (W/eval_refined.json, results.md) instead of sampling.")
flags.DEFINE_float("eval_sparsity", 0.0, "--evaluate: the inference sparsity level of the test rows.")
flags.DEFINE_integer("eval_rows", 0, "--evaluate: test rows to refine (0: the run's eval.num_rows).", lower_bound=0)
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def sample_mcvae():
    run = mcvae.load_run(FLAGS.workdir, FLAGS.run_index)
    given = parse_given(FLAGS.condition, run.stats.conditions.names)
    designs = mcvae.generate(run, given, FLAGS.num_samples, jax.random.key(FLAGS.seed), FLAGS.temperature)
    return mcvae.write_samples(run, designs, given, FLAGS.output_dir)


def sample_ldm(config):
    run = ldm.load_ldm_run(FLAGS.workdir)
    given = parse_given(FLAGS.condition, run.stats.conditions.names)
    chosen = {"sampler": FLAGS.sampler, "num_steps": FLAGS.num_steps, "eta": FLAGS.eta,
              "guidance_scale": FLAGS.guidance_scale}
    settings = SamplerSettings(**{name: config.eval[name] if value is None else value
                                  for name, value in chosen.items()}).validated()
    plan = refine.plan_for_run(  # checked before sampling: a bad folder or template stops at once
        config, run.stats.conditions.names, given, FLAGS.refine, FLAGS.refine_model, FLAGS.prompt, FLAGS.seed,
        strength=FLAGS.refine_strength, guidance_scale=FLAGS.refine_guidance, num_steps=FLAGS.refine_steps,
        size=FLAGS.refine_size) if FLAGS.refine else None
    images = ldm.generate(run, given, FLAGS.num_samples, jax.random.key(FLAGS.seed), settings, FLAGS.batch_size)
    if plan is None:
        return ldm.write_samples(images, FLAGS.output_dir)
    del run
    runtime.release_device_memory()  # before PyTorch loads the refiner onto the same device
    return refine.refine_and_write(plan, images, FLAGS.output_dir)


def evaluate_refined(config):
    run = ldm.load_ldm_run(FLAGS.workdir)
    template = prompts.resolve_template(FLAGS.prompt, prompts.config_template(config), run.stats.conditions.names)
    plan = refine.plan(FLAGS.refine, FLAGS.refine_model, template, FLAGS.seed, strength=FLAGS.refine_strength,
                       guidance_scale=FLAGS.refine_guidance, num_steps=FLAGS.refine_steps, size=FLAGS.refine_size)
    refine_eval.evaluate_refined(FLAGS.workdir, run, plan, template, FLAGS.eval_sparsity, FLAGS.eval_rows)
    return [os.path.join(FLAGS.workdir, name) for name in (refine_eval.RESULTS, refine_eval.GRID, "results.md")]


@runtime.exit_on_input_errors
def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.refine:
        runtime.share_accelerator_with_torch()  # before JAX starts: one GPU for JAX sampling, then PyTorch
    if not run_dir.has_bundle(FLAGS.workdir) and run_dir.has_checkpoints(FLAGS.workdir):
        raise InputError(f"{FLAGS.workdir} has no inference bundle (an older mcjax trained it, or training did not "
                         f"finish); write one with: python train.py --export --workdir {FLAGS.workdir}")
    bundle = run_dir.read_bundle(FLAGS.workdir)
    runtime.set_xla_flags_for_job(bundle.manifest["job"])
    runtime.enable_compilation_cache(bundle.config.get("compilation_cache_dir", ""))
    if FLAGS.refine and bundle.manifest["job"] != "ldm":
        raise InputError(f"--refine refines mcLDM images; {FLAGS.workdir} holds a {bundle.manifest['job']!r} run.")
    if FLAGS.evaluate and not FLAGS.refine:
        raise InputError("--evaluate scores refined test images: give --refine sdxl|flux and --refine_model.")
    if FLAGS.evaluate:
        paths = evaluate_refined(bundle.config)
    else:
        paths = sample_ldm(bundle.config) if bundle.manifest["job"] == "ldm" else sample_mcvae()
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
