"""Flax AutoencoderKL: parity with diffusers, weight loading/saving, latent helpers and precomputation."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from mcjax.models.autoencoder_kl import (
    SD_VAE_CONFIG,
    AutoencoderKL,
    AutoencoderKLConfig,
    decode_from_latents,
    encode_to_latents,
    init_variables,
)
from mcjax.models.autoencoder_kl_weights import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, save_pretrained
from mcjax.train.latents import _fixed_size_batches, encode_images, load_latents, precompute_latents

TINY = AutoencoderKLConfig(
    block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4, sample_size=32
)
SD21_VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.8.0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 768,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD_VAE_NUM_PARAMS = 83_653_863


def random_images(seed, shape=(2, 32, 32, 3)):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def flat_params(variables):
    return traverse_util.flatten_dict(jax.device_get(variables["params"]))


def random_diffusers_vae(diffusers_config: dict, path):
    """A diffusers AutoencoderKL with random weights and non-trivial norm and bias parameters, saved in diffusers
    format at ``path``."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL.from_config(diffusers_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # GroupNorm scale/bias and conv/linear biases
                p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def torch_vae_dir(tmp_path_factory):
    return random_diffusers_vae(TINY.to_diffusers_config(), tmp_path_factory.mktemp("torch_vae"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny randomly initialised mcjax VAE saved in diffusers format (no torch needed)."""
    module = AutoencoderKL(TINY)
    variables = init_variables(module, jax.random.key(0, impl="rbg"))  # threefry init compiles slowly on CPU
    return save_pretrained(module, variables, tmp_path_factory.mktemp("tiny_vae")), variables


def torch_reference(model, images_BxHxWxC):
    """diffusers posterior mean/logvar and decoding of the mean, as NHWC numpy."""
    import torch

    with torch.no_grad():
        posterior = model.encode(torch.from_numpy(images_BxHxWxC).permute(0, 3, 1, 2)).latent_dist
        decoded = model.decode(posterior.mean).sample
    return tuple(t.permute(0, 2, 3, 1).numpy() for t in (posterior.mean, posterior.logvar, decoded))


@pytest.mark.parametrize("size", ["tiny", "sd21"])
def test_matches_diffusers(torch_vae_dir, tmp_path, size):
    """sd21: the full Stable Diffusion 2.1 VAE (83.7M parameters, random weights): every layer a real checkpoint
    has, by the names and shapes diffusers saves."""
    model, path = torch_vae_dir if size == "tiny" else random_diffusers_vae(SD21_VAE_CONFIG, tmp_path)
    module, variables = from_pretrained(path)
    assert module.config == (TINY if size == "tiny" else SD_VAE_CONFIG)
    images = random_images(0, (2, 32, 32, 3) if size == "tiny" else (1, 64, 64, 3))
    mean_ref, logvar_ref, decoded_ref = torch_reference(model, images)
    mean, logvar = jax.jit(lambda v, x: module.apply(v, x, method=module.encode))(variables, images)
    decoded = jax.jit(lambda v, z: module.apply(v, z, method=module.decode))(variables, mean_ref)
    np.testing.assert_allclose(mean, mean_ref, atol=1e-4)
    np.testing.assert_allclose(logvar, logvar_ref, atol=1e-4)
    np.testing.assert_allclose(decoded, decoded_ref, atol=1e-4)


@pytest.mark.parametrize("as_conv", [False, True], ids=["linear", "conv1x1"])
def test_old_attention_layout_loads_same_params(torch_vae_dir, tmp_path, as_conv):
    _, path = torch_vae_dir
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    old = {}
    for key, value in load_file(path / WEIGHTS_NAME).items():
        for new_name, old_name in renames.items():
            if new_name in key:
                key = key.replace(new_name, old_name)
                value = value[:, :, None, None] if as_conv and value.ndim == 2 else value
        old[key] = value
    assert any(".proj_attn." in k for k in old)
    save_file(old, tmp_path / WEIGHTS_NAME)
    (tmp_path / CONFIG_NAME).write_text((path / CONFIG_NAME).read_text())
    _, expected = from_pretrained(path)
    _, loaded = from_pretrained(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, flat_params(loaded), flat_params(expected))


def test_mcjax_checkpoint_loads_in_diffusers(tiny_dir):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    path, variables = tiny_dir
    model = diffusers.AutoencoderKL.from_pretrained(path).eval()
    module = AutoencoderKL(TINY)
    images = random_images(1)
    mean_ref, logvar_ref, decoded_ref = torch_reference(model, images)
    mean, logvar = module.apply(variables, images, method=module.encode)
    np.testing.assert_allclose(mean, mean_ref, atol=1e-4)
    np.testing.assert_allclose(logvar, logvar_ref, atol=1e-4)
    np.testing.assert_allclose(module.apply(variables, mean_ref, method=module.decode), decoded_ref, atol=1e-4)


def test_sd21_config_shapes():
    config = AutoencoderKLConfig.from_diffusers_config(SD21_VAE_CONFIG)
    assert config == SD_VAE_CONFIG
    assert config.downsampling_factor == 8 and config.scaling_factor == 0.18215
    module = AutoencoderKL(config)
    image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda: init_variables(module, jax.random.key(0), 64))
    assert sum(x.size for x in jax.tree.leaves(variables)) == SD_VAE_NUM_PARAMS
    mean, logvar = jax.eval_shape(lambda v, x: module.apply(v, x, method=module.encode), variables, image)
    assert mean.shape == logvar.shape == (1, 8, 8, 4)
    decoded = jax.eval_shape(lambda v, z: module.apply(v, z, method=module.decode), variables, mean)
    assert decoded.shape == (1, 64, 64, 3)


def test_save_load_round_trip(tiny_dir):
    path, variables = tiny_dir
    module, loaded = from_pretrained(path)
    assert module.config == TINY
    jax.tree.map(np.testing.assert_array_equal, flat_params(loaded), flat_params(variables))


def test_config_round_trip():
    config = dataclasses.replace(TINY, shift_factor=0.1159, use_quant_conv=False)
    assert AutoencoderKLConfig.from_diffusers_config(json.loads(json.dumps(config.to_diffusers_config()))) == config


def copy_vae(src, dst, config_edit=None, weights_edit=None):
    dst.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / CONFIG_NAME).read_text())
    (dst / CONFIG_NAME).write_text(json.dumps(config_edit(config) if config_edit else config))
    weights = load_file(src / WEIGHTS_NAME)
    save_file(weights_edit(weights) if weights_edit else weights, dst / WEIGHTS_NAME)
    return dst


def drop_key(key):
    return lambda w: {k: v for k, v in w.items() if k != key}


def with_key(key, value):
    return lambda w: {**w, key: value}


def with_config(**options):
    return lambda c: {**c, **options}


@pytest.mark.parametrize(
    "config_edit, weights_edit, error, match",
    [
        (None, drop_key("decoder.conv_in.bias"), ValueError, r"missing keys \['decoder.conv_in.bias'\]"),
        (
            None,
            with_key("encoder.extra.weight", np.zeros(3, np.float32)),
            ValueError,
            r"unexpected keys \['encoder.extra",
        ),
        (
            None,
            with_key("quant_conv.weight", np.zeros((8, 8, 3, 3), np.float32)),
            ValueError,
            r"quant_conv.weight: checkpoint has \(8, 8, 3, 3\), the model expects \(8, 8, 1, 1\)",
        ),
        (with_config(act_fn="gelu"), None, ValueError, "unsupported act_fn='gelu'"),
        (
            with_config(down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
            None,
            ValueError,
            "unsupported down_block_types",
        ),
        (
            with_config(norm_type="spatial"),
            None,
            ValueError,
            r"unsupported AutoencoderKL config options: \['norm_type'\]",
        ),
    ],
    ids=["missing", "unexpected", "shape", "act_fn", "block_type", "unknown_option"],
)
def test_bad_checkpoints_raise(tiny_dir, tmp_path, config_edit, weights_edit, error, match):
    path = copy_vae(tiny_dir[0], tmp_path / "vae", config_edit, weights_edit)
    with pytest.raises(error, match=match):
        from_pretrained(path)


def test_missing_config_and_pickle_only(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json found; looked in"):
        from_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text((tiny_dir[0] / CONFIG_NAME).read_text())
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"found only pickled \['diffusion_pytorch_model.bin'\]"):
        from_pretrained(tmp_path)


def test_pipeline_folder_and_hub_cache(tiny_dir, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--org--sd" / "snapshots" / "abc123"
    copy_vae(tiny_dir[0], snapshot / "vae")
    (tmp_path / "hub" / "models--org--sd" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--sd" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert from_pretrained(snapshot)[0].config == TINY  # pipeline folder: uses vae/
    assert from_pretrained("org/sd")[0].config == TINY
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        from_pretrained("org/missing")


def test_bf16_close_to_fp32(tiny_dir):
    _, variables = tiny_dir
    images = random_images(2)
    outputs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        module = AutoencoderKL(TINY, dtype=dtype)
        outputs[dtype] = jax.jit(module.apply)(variables, images)[0]
    assert outputs[jnp.bfloat16].dtype == jnp.float32
    np.testing.assert_allclose(outputs[jnp.bfloat16], outputs[jnp.float32], atol=0.1)
    assert np.mean(np.abs(outputs[jnp.bfloat16] - outputs[jnp.float32])) < 0.02


@pytest.mark.parametrize(
    "shift, std",
    [((0.0,) * 4, (1.0,) * 4), ((0.5,) * 4, (1.0,) * 4), ((0.1, 0.2, 0.3, 0.4), (1.0, 2.0, 3.0, 4.0))],
    ids=["scale", "shift_factor", "latents_mean_std"],
)
def test_latent_scaling(tiny_dir, shift, std):
    _, variables = tiny_dir
    if len(set(std)) > 1:
        config = dataclasses.replace(TINY, scaling_factor=0.2, latents_mean=shift, latents_std=std)
    else:
        config = dataclasses.replace(TINY, scaling_factor=0.2, shift_factor=shift[0] or None)
    module = AutoencoderKL(config)
    images = random_images(3)
    mean, _ = module.apply(variables, images, method=module.encode)
    latents = encode_to_latents(module, variables, images)
    np.testing.assert_allclose(latents, (mean - np.array(shift)) * 0.2 / np.array(std), atol=1e-6)
    decoded = decode_from_latents(module, variables, latents)
    np.testing.assert_allclose(decoded, module.apply(variables, mean, method=module.decode), atol=1e-5)
    sampled = encode_to_latents(module, variables, images, jax.random.key(0))
    assert not np.allclose(sampled, latents)
    np.testing.assert_array_equal(sampled, encode_to_latents(module, variables, images, jax.random.key(0)))


def test_precompute_latents(tiny_dir, tmp_path):
    _, variables = tiny_dir
    module = AutoencoderKL(TINY)
    images = np.random.default_rng(4).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    expected = encode_to_latents(module, variables, images / 127.5 - 1.0)
    path = precompute_latents(module, variables, images, 2, tmp_path / "latents.npy", progress=False)
    latents = load_latents(path)
    assert latents.shape == (5, 8, 8, 4) and latents.dtype == np.float32
    np.testing.assert_allclose(latents, expected, atol=1e-5)
    batches = [images[:3], images[3:]]  # an iterable of batches of another size
    precompute_latents(module, variables, iter(batches), 2, tmp_path / "iter.npy", progress=False)
    np.testing.assert_allclose(load_latents(tmp_path / "iter.npy"), expected, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter.npy", "latents.npy"]
    np.testing.assert_array_equal(encode_images(module, variables, images, 2), latents)  # the same, in memory


def test_batches_have_one_shape():
    images = np.zeros((7, 4, 4, 3), np.uint8)
    batches = list(_fixed_size_batches(images, 3))
    assert [n for _, n in batches] == [3, 3, 1]
    assert {b.shape for b, _ in batches} == {(3, 4, 4, 3)}
