"""Refinement by SDXL / FLUX img2img (mcjax.generate.refine) and prompts from conditions (mcjax.generate.prompts).

The pipelines are tiny random ones assembled here from diffusers components, with tokenizers built locally, saved to a
folder and loaded back the way a user's weights are: nothing comes from the hub.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mcjax.errors import InputError
from mcjax.generate import prompts, refine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("BikeStyle", "frame_size", "RIM_STYLE front", "RIM_STYLE rear", "Teeth on chainring")
TEMPLATE = "a [{BikeStyle} ]bicycle, frame size {frame_size}, {RIM_STYLE front} front wheel, technical drawing"


# --- prompts


@pytest.mark.parametrize("given,expected", [
    ({"BikeStyle": "DIRT_JUMP", "frame_size": "M", "RIM_STYLE front": "disc"},
     "a DIRT JUMP bicycle, frame size M, disc front wheel, technical drawing"),
    ({"BikeStyle": "BMX"}, "a BMX bicycle, technical drawing"),
    ({"RIM_STYLE front": "spoked", "BikeStyle": "", "frame_size": float("nan")},
     "a bicycle, spoked front wheel, technical drawing"),
    ({}, "a bicycle, technical drawing"),
])
def test_prompts_drop_conditions_not_given(given, expected):
    assert prompts.build_prompt(TEMPLATE, given, NAMES) == expected


def test_prompt_values_and_literal_prompts():
    assert prompts.build_prompt("{Teeth on chainring} teeth", {"Teeth on chainring": "44.0"}, NAMES) == "44 teeth"
    assert prompts.build_prompt("a red bike, on white", {"BikeStyle": "BMX"}, NAMES) == "a red bike, on white"
    assert prompts.resolve_template("a {BikeStyle} bike", TEMPLATE, NAMES) == "a {BikeStyle} bike"  # --prompt wins
    assert prompts.resolve_template(None, TEMPLATE, NAMES) == TEMPLATE


def test_unknown_template_fields_and_empty_templates_are_input_errors():
    with pytest.raises(InputError, match=r"field \{Colour\} is not a condition.*valid fields: \['BikeStyle'"):
        prompts.build_prompt("a {Colour} bike", {}, NAMES)
    with pytest.raises(InputError, match="no refine.prompt_template; pass --prompt"):
        prompts.resolve_template(None, "", NAMES)


def test_config_templates_and_the_fallback_for_older_runs():
    from mcjax.configs import dvm_ldm, geobiked_ldm, image_folder_ldm

    geobiked, dvm = geobiked_ldm.get_config(), dvm_ldm.get_config()
    for config in (geobiked, dvm):
        names = (*config.data.categorical_columns, *config.data.numerical_columns)
        prompts.check_template(config.refine.prompt_template, names)
        assert prompts.build_prompt(config.refine.prompt_template, {}, names)
    assert image_folder_ldm.get_config().refine.prompt_template == ""
    del geobiked.refine, dvm.refine  # a run trained before config.refine: the template of its dataset's config
    assert prompts.config_template(geobiked) == geobiked_ldm.get_config().refine.prompt_template
    assert prompts.config_template(dvm) == dvm_ldm.get_config().refine.prompt_template
    other = image_folder_ldm.get_config()
    del other.refine
    assert prompts.config_template(other) == ""


# --- tiny pipelines


def clip_tokenizer(folder):
    """A byte-level CLIP tokenizer with no merges: every character is a token."""
    from transformers import CLIPTokenizer

    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def t5_tokenizer():
    """A character-level T5 (Unigram) tokenizer."""
    import tokenizers
    from transformers import T5TokenizerFast

    characters = "▁abcdefghijklmnopqrstuvwxyz0123456789,-"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in characters]
    model = tokenizers.Tokenizer(tokenizers.models.Unigram(pieces, unk_id=2))
    model.normalizer = tokenizers.normalizers.Lowercase()
    model.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    model.decoder = tokenizers.decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=model, extra_ids=0, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


def clip_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=514, projection_dim=32)


def tiny_sdxl_refiner(folder):
    """The SDXL refiner's shape (no first text encoder; aesthetic score in the time ids), a few channels wide."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(16, 32), norm_num_groups=8, layers_per_block=1, sample_size=16,
                                in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=5 * 8 + 32,
                                cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, norm_num_groups=8,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    pipeline = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=CLIPTextModelWithProjection(clip_config()),
        tokenizer_2=clip_tokenizer(os.path.join(folder, "_clip")), unet=unet, scheduler=scheduler,
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    pipeline.save_pretrained(folder)
    return folder


def tiny_flux(folder):
    """FLUX.1's components (CLIP + T5 text encoders, a one-block transformer, a one-channel-latent VAE)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
    t5 = T5EncoderModel(T5Config(vocab_size=48, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0))
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    # Saved as FLUX.1-dev's folder is: a FluxPipeline, which FluxImg2ImgPipeline loads.
    pipeline = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=CLIPTextModel(
        clip_config()), tokenizer=clip_tokenizer(os.path.join(folder, "_clip")), text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(), transformer=transformer)
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("refiners")
    return {"sdxl": tiny_sdxl_refiner(str(root / "sdxl")), "flux": tiny_flux(str(root / "flux"))}


def mcldm_images():
    """Two 32 px images as the mcLDM returns them (float [0, 1])."""
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1.0, (2, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_refines_two_images_end_to_end_on_cpu(weights, kind):
    refiner = refine.load_refiner(kind, weights[kind])
    assert refiner.device == "cpu" and type(refiner.pipeline).__name__ == refine.KINDS[kind].pipeline
    settings = refine.RefineSettings(strength=0.5, guidance_scale=refine.PAPER[kind].guidance_scale, num_steps=2)
    images = mcldm_images()
    prompt = prompts.build_prompt(TEMPLATE, {"BikeStyle": "BMX"}, NAMES)
    refined = refine.refine_images(refiner, images, prompt, dataclasses.replace(settings, batch_size=2), seed=3)
    assert refined.shape == images.shape and refined.dtype == np.float32
    assert np.all(np.isfinite(refined)) and 0.0 <= refined.min() and refined.max() <= 1.0
    assert np.abs(refined - images).mean() > 0.01  # the refiner changed them
    if kind == "flux":  # the cheaper one: seeding and resizing (the same code for both)
        # Seeded per image: the second image alone, as uint8, in a batch of one, refines the same.
        again = refine.refine_images(refiner, np.round(images[1:] * 255).astype(np.uint8), [prompt], settings, seed=4)
        np.testing.assert_allclose(again[0], refined[1], atol=0.02)
        larger = refine.refine_images(refiner, images[:1], prompt, dataclasses.replace(settings, size=48), seed=0)
        assert larger.shape == (1, 48, 48, 3)


def test_the_refined_grid_holds_raw_and_refined_rows(tmp_path):
    raw = np.zeros((5, 8, 8, 3), np.float32)
    refined = np.ones((5, 16, 16, 3), np.float32)
    record = {"prompt": "a bicycle", "refiner": "sdxl"}
    paths = refine.write_refined(raw, refined, record, str(tmp_path), columns=4)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted([*(f"refined_{i:03d}.png" for i in range(5)), "refine.json", "samples.png"])
    assert json.loads((tmp_path / "refine.json").read_text())["prompt"] == "a bicycle"
    grid = refine.side_by_side(raw, refined, columns=4)
    gap, tile = 2, 16
    assert grid.shape == (4 * (tile + gap) + gap, 4 * (tile + gap) + gap, 3)  # 2 × (raw row, refined row)
    first_raw, first_refined = grid[gap + tile // 2, gap + 1], grid[2 * gap + tile + tile // 2, gap + 1]
    assert first_raw.tolist() == [0, 0, 0] and first_refined.tolist() == [255, 255, 255]
    third_row = grid[3 * gap + 2 * tile + tile // 2]
    assert third_row[gap + 1].tolist() == [0, 0, 0] and third_row[2 * gap + tile + 1].tolist() == [255, 255, 255]


# --- bad input


def test_wrong_or_missing_model_folders_name_the_pipeline_class(weights, tmp_path):
    with pytest.raises(InputError, match="no such folder; --refine sdxl expects a diffusers "
                                         "StableDiffusionXLImg2ImgPipeline folder"):
        refine.model_folder("sdxl", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="has no model_index.json; --refine flux expects a diffusers "
                                         "FluxImg2ImgPipeline folder"):
        refine.model_folder("flux", str(tmp_path))
    with pytest.raises(InputError, match="holds a FluxPipeline; --refine sdxl expects .*StableDiffusionXLImg2Img"):
        refine.model_folder("sdxl", weights["flux"])
    with pytest.raises(InputError, match="neither a folder nor in the local Hugging Face cache"):
        refine.model_folder("flux", "nobody-here/no-such-model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", "vae": ["diffusers",
                                                                                               "AutoencoderKL"]}))
    with pytest.raises(InputError, match="could not be loaded as a FluxImg2ImgPipeline"):
        refine.load_refiner("flux", str(broken))


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="run no denoising step"):
        refine.RefineSettings(strength=0.4, guidance_scale=7.5, num_steps=2).validated()
    with pytest.raises(InputError, match=r"must lie in \(0, 1\]"):
        refine.RefineSettings(strength=1.5, guidance_scale=7.5, num_steps=50).validated()
    with pytest.raises(InputError, match="Unknown refiner 'dalle'"):
        refine.model_folder("dalle", "x")


def test_the_paper_settings():
    assert refine.PAPER["sdxl"] == refine.RefineSettings(strength=0.5, guidance_scale=7.5, num_steps=50)
    assert (refine.PAPER["flux"].num_steps, refine.PAPER["flux"].guidance_scale) == (50, 30.0)


def test_without_the_extra_the_error_says_what_to_install():
    script = ("import sys; sys.modules['diffusers'] = None\n"
              "from mcjax.generate import refine\n"
              "try:\n    refine.import_torch_diffusers()\nexcept ValueError as e:\n    print(e)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.strip() == ("Refining needs the 'refine' extra (diffusers is not installed): "
                                     'pip install -e ".[refine]"'), result.stderr[-2000:]


def test_jax_gives_the_device_back_when_refining():
    from mcjax import runtime

    environ = {}
    runtime.share_accelerator_with_torch(environ)
    assert environ == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_ALLOCATOR": "platform"}
    environ = {"XLA_PYTHON_CLIENT_MEM_FRACTION": ".3"}  # the user's bound on JAX's pool is kept as it is
    runtime.share_accelerator_with_torch(environ)
    assert environ == {"XLA_PYTHON_CLIENT_MEM_FRACTION": ".3"}


# --- sample.py --refine


def _random(shapes):
    """Small random arrays of the given shapes (variances 1): initialisers compile for a minute on 2 busy cores."""
    import jax

    rng = np.random.default_rng(0)
    flat = jax.tree_util.tree_flatten_with_path(shapes)
    leaves = [np.ones(s.shape, s.dtype) if "var" in jax.tree_util.keystr(path) else
              rng.normal(0.0, 0.05, s.shape).astype(s.dtype) for path, s in flat[0]]
    return jax.tree_util.tree_unflatten(flat[1], leaves)


def tiny_ldm_workdir(workdir):
    """An untrained mcLDM's inference bundle (16 px GeoBiked, the smoke U-Net), written without training."""
    import jax
    import jax.numpy as jnp
    from mcjax.configs import geobiked_ldm

    from mcjax import run_dir
    from mcjax.data import tables
    from mcjax.models.autoencoder_kl import AutoencoderKL, init_variables
    from mcjax.models.autoencoder_kl_weights import save_pretrained
    from mcjax.models.ldm import unet_from_config
    from mcjax.train import first_stage

    config = geobiked_ldm.get_config("smoke")
    config.data.image_size = 16
    stats = tables.prepare_table(tables.table_from_config(config.data), config.data.test_fraction,
                                 config.data.split_seed).stats
    architecture = first_stage.architecture(config)
    autoencoder = AutoencoderKL(architecture)
    save_pretrained(architecture, _random(jax.eval_shape(lambda key: init_variables(autoencoder, key),
                                                         jax.random.key(0))), os.path.join(workdir, "autoencoder"))
    latent_shape = (16 // architecture.downsampling_factor,) * 2 + (architecture.latent_channels,)
    unet = unet_from_config(config.model, stats.conditions, latent_shape[-1])
    key = jax.random.key(1)
    variables = _random(jax.eval_shape(unet.init, {"params": key, "dropout": key}, jnp.zeros((1, *latent_shape)),
                                       jnp.zeros((1,), jnp.int32), stats.conditions.encode({}, 1)))
    run_dir.write_bundle(workdir, "ldm", {"latent_shape": list(latent_shape), "first_stage": {
        "in_workdir": True, "path": "autoencoder"}}, {"unet": variables}, config, stats.to_json())
    return workdir


def _sample(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def ldm_workdir(tmp_path_factory):
    return tiny_ldm_workdir(str(tmp_path_factory.mktemp("ldm") / "run"))


@pytest.mark.parametrize("flags,message", [  # one in the default suite: each is a process start (≈ 7 s)
    (["--refine", "sdxl", "--refine_model", "/no/such/refiner"], "error: Refiner weights '/no/such/refiner': no such "
                                                                 "folder; --refine sdxl expects"),
    pytest.param(["--refine", "flux"], "error: No refiner weights given (--refine_model DIR): --refine flux expects a "
                                       "diffusers FluxImg2ImgPipeline folder", marks=pytest.mark.slow),
    pytest.param(["--refine", "sdxl", "--refine_model", ".", "--prompt", "a {Colour} bike"],
                 "error: Prompt template field {Colour} is not a condition of this run; valid fields: ['BikeStyle'",
                 marks=pytest.mark.slow),
])
def test_sample_cli_refine_input_errors_are_one_line(ldm_workdir, tmp_path, flags, message):
    result = _sample("--workdir", ldm_workdir, "--num_samples", "1", "--output_dir", str(tmp_path), *flags)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-3000:]
    assert result.stderr.startswith(message), result.stderr
    assert not os.path.exists(tmp_path / "samples.png")  # checked before sampling


@pytest.mark.slow  # about 40 s on 2 cores: JAX sampling and PyTorch refinement in one process
def test_sample_cli_refines_with_a_local_sdxl_refiner(ldm_workdir, weights, tmp_path):
    result = _sample("--workdir", ldm_workdir, "--condition", "BikeStyle=BMX", "--num_samples", "2", "--num_steps", "2",
                     "--output_dir", str(tmp_path), "--refine", "sdxl", "--refine_model", weights["sdxl"],
                     "--refine_steps", "2", "--refine_size", "32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["refine.json", "refined_000.png", "refined_001.png", "sample_000.png",
                                            "sample_001.png", "samples.png"]
    record = json.loads((tmp_path / "refine.json").read_text())
    assert record["prompt"] == ("a BMX bicycle, technical side-view drawing, black lines on white background")
    assert (record["strength"], record["guidance_scale"], record["num_steps"]) == (0.5, 7.5, 2)
    from PIL import Image

    assert Image.open(tmp_path / "samples.png").size == (4 * 34 + 2, 2 * 34 + 2)  # raw row over refined row
