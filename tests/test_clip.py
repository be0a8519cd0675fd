"""CLIP image tower in JAX against PyTorch with random weights: Hugging Face ``CLIPVisionModelWithProjection``
(saved with ``save_pretrained``) and open_clip's ``VisionTransformer`` (its twin in tests/torch_open_clip.py; open_clip
itself where it imports), plus the preprocessing against torch's antialiased bicubic resize.
"""

import functools
import json
import shutil

import jax
import numpy as np
import pytest

from mcjax.errors import InputError
from mcjax.models.clip import clip_image_embeddings, clip_image_similarity, clip_preprocess, load_clip

torch = pytest.importorskip("torch")
ATOL = 1e-4


TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
)


@functools.lru_cache(maxsize=2)
def _hf_model(act: str, whole_clip: bool = False):
    """A random tiny tower for the whole module (building and importing cost seconds).

    ``whole_clip``: a ``CLIPModel`` (text tower too, nested ``vision_config``), as ``openai/clip-vit-*`` ships;
    otherwise a ``CLIPVisionModelWithProjection``.
    """
    transformers = pytest.importorskip("transformers")
    from tests.torch_open_clip import randomise_biases_and_norms_

    torch.manual_seed(0)
    vision = transformers.CLIPVisionConfig(**TINY_VISION, projection_dim=16, hidden_act=act)
    if whole_clip:
        text = transformers.CLIPTextConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
        config = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
        model = transformers.CLIPModel(config).eval()
    else:
        model = transformers.CLIPVisionModelWithProjection(vision).eval()
    randomise_biases_and_norms_(model)
    return model


def _hf_image_embeds(model, pixels_Bx3xSxS):
    with torch.no_grad():
        if hasattr(model, "text_model"):
            out = model.get_image_features(pixel_values=pixels_Bx3xSxS)
            return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()
        return model(pixel_values=pixels_Bx3xSxS).image_embeds.numpy()


def _nchw(x_BxHxWx3):
    return torch.from_numpy(np.ascontiguousarray(x_BxHxWx3)).permute(0, 3, 1, 2)


def _torch_preprocess(images_BxHxWx3, size, mean, std):
    """torchvision's Resize(size, BICUBIC, antialias=True) + CenterCrop + Normalize, on tensors."""
    x = _nchw(images_BxHxWx3)
    h, w = x.shape[2:]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    x = x[:, :, top : top + size, left : left + size].clamp(0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _pixels(seed=0, size=32):
    return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("act,whole_clip", [("quick_gelu", False), ("gelu", True)])
def test_hugging_face_tower_matches(act, whole_clip, tmp_path):
    model = _hf_model(act, whole_clip)
    model.save_pretrained(tmp_path)
    module, variables, image_size = load_clip(tmp_path)
    assert image_size == 32 and module.config.act == act and module.config.heads == 4
    pixels = _pixels()
    expected = _hf_image_embeds(model, _nchw(pixels))
    np.testing.assert_allclose(np.asarray(jax.jit(module.apply)(variables, pixels)), expected, rtol=0, atol=ATOL)


def test_similarity_matches_with_preprocessing(tmp_path):
    """Non-square 40x48 images in [0, 1]: resize, crop, normalise, embed, cosine, all against torch."""
    model = _hf_model("quick_gelu")
    model.save_pretrained(tmp_path)
    module, variables, _ = load_clip(tmp_path)
    rng = np.random.default_rng(1)
    generated = rng.uniform(size=(3, 40, 48, 3)).astype(np.float32)
    reference = np.clip(generated + 0.3 * rng.normal(size=generated.shape), 0, 1).astype(np.float32)
    reference[2] = generated[2]
    c = module.config
    np.testing.assert_allclose(
        np.asarray(clip_preprocess(generated, c)).transpose(0, 3, 1, 2),
        _torch_preprocess(generated, 32, c.mean, c.std).numpy(),
        rtol=0,
        atol=1e-5,
    )
    with torch.no_grad():
        embed = lambda x: model(pixel_values=_torch_preprocess(x, 32, c.mean, c.std)).image_embeds  # noqa: E731
        expected = torch.nn.functional.cosine_similarity(embed(generated), embed(reference)).numpy()
    got = np.asarray(clip_image_similarity(module, variables, generated, reference))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert abs(got[2] - 1.0) < 1e-5


def _open_clip_tower(quick_gelu: bool, heads: int, ls):
    from tests.torch_open_clip import CLIPImageTower, randomise_biases_and_norms_

    torch.manual_seed(0)
    kwargs = dict(image_size=32, patch_size=8, width=64, layers=2, heads=heads, mlp_ratio=2.0, output_dim=16)
    model = CLIPImageTower(**kwargs, quick_gelu=quick_gelu, ls=ls).eval()
    randomise_biases_and_norms_(model)
    return model


def _open_clip_state(model):
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["text_projection"] = torch.zeros(8, 16)  # the text tower is ignored
    return state


def test_open_clip_folder_with_config_matches(tmp_path):
    """open_clip_model.safetensors + open_clip_config.json: quick_gelu, head_width 16 (4 heads), layer scale."""
    from safetensors.torch import save_file

    model = _open_clip_tower(quick_gelu=True, heads=4, ls=0.5)
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            block.ls_1.gamma.uniform_(0.5, 1.5)
            block.ls_2.gamma.uniform_(0.5, 1.5)
    save_file(_open_clip_state(model), tmp_path / "open_clip_model.safetensors")
    vision_cfg = {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8, "ls_init_value": 0.5}
    config = {"model_cfg": {"embed_dim": 16, "quick_gelu": True, "vision_cfg": vision_cfg}}
    config["preprocess_cfg"] = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    module, variables, image_size = load_clip(tmp_path)
    c = module.config
    assert (image_size, c.heads, c.act, c.layer_scale, c.mean) == (32, 4, "quick_gelu", True, (0.5, 0.5, 0.5))
    pixels = _pixels(2)
    with torch.no_grad():
        expected = model.encode_image(_nchw(pixels)).numpy()
    np.testing.assert_allclose(np.asarray(jax.jit(module.apply)(variables, pixels)), expected, rtol=0, atol=ATOL)


def test_open_clip_pickle_with_explicit_activation_matches(tmp_path):
    """A bare ``.pt`` state dict (DDP ``module.`` prefix): gelu given by the caller, heads = width // 64."""
    model = _open_clip_tower(quick_gelu=False, heads=1, ls=None)
    path = tmp_path / "epoch_32.pt"
    torch.save({"epoch": 32, "state_dict": {"module." + k: v for k, v in _open_clip_state(model).items()}}, path)
    with pytest.raises(InputError, match="epoch_32.pt.*does not say its activation.*quick_gelu"):
        load_clip(path)
    module, variables, _ = load_clip(path, quick_gelu=False)
    assert (module.config.heads, module.config.act) == (1, "gelu")
    images = np.random.default_rng(3).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model.encode_image(_torch_preprocess(images, 32, module.config.mean, module.config.std)).numpy()
    np.testing.assert_allclose(np.asarray(clip_image_embeddings(module, variables, images)), expected, atol=ATOL)


def test_twin_is_open_clip():
    """Runs where open_clip imports (it needs a torchvision that loads beside this PyTorch)."""
    try:
        import open_clip
    except Exception:
        pytest.skip("open_clip cannot be imported here")
    from tests.torch_open_clip import CLIPImageTower, randomise_biases_and_norms_

    vision_cfg = dict(image_size=32, layers=2, width=64, head_width=16, patch_size=8, mlp_ratio=2.0, ls_init_value=0.5)
    text_cfg = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    torch.manual_seed(0)
    real = open_clip.CLIP(embed_dim=16, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True).eval()
    randomise_biases_and_norms_(real)
    twin = CLIPImageTower(
        image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_ratio=2.0, output_dim=16, quick_gelu=True, ls=0.5
    ).eval()
    twin.load_state_dict({k: v for k, v in real.state_dict().items() if k.startswith("visual.")}, strict=True)
    x = torch.from_numpy(_pixels(4)).permute(0, 3, 1, 2)
    with torch.no_grad():
        np.testing.assert_allclose(twin.encode_image(x).numpy(), real.encode_image(x).numpy(), atol=1e-6)


def test_missing_and_unrecognised_checkpoints(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(InputError, match="clip-vit-base-patch32.*do not exist"):
        load_clip(tmp_path / "clip-vit-base-patch32")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds none of model.safetensors"):
        load_clip(empty)
    save_file({"lin0.model.1.weight": np.ones((1, 64, 1, 1), np.float32)}, tmp_path / "alex.safetensors")
    with pytest.raises(InputError, match="alex.safetensors.*not a CLIP checkpoint"):
        load_clip(tmp_path / "alex.safetensors")
    save_file({"visual.layer1.0.conv1.weight": np.ones((1, 1, 1, 1), np.float32)}, tmp_path / "rn50.safetensors")
    with pytest.raises(InputError, match="ResNet"):
        load_clip(tmp_path / "rn50.safetensors")


def test_checkpoints_that_do_not_fit_are_refused(tmp_path):
    from safetensors.torch import save_file

    hf = tmp_path / "hf"
    _hf_model("quick_gelu").save_pretrained(hf)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(hf / "model.safetensors", lonely / "model.safetensors")
    with pytest.raises(InputError, match="need the config.json"):
        load_clip(lonely / "model.safetensors")
    state = _open_clip_state(_open_clip_tower(quick_gelu=True, heads=1, ls=None))
    save_file({**state, "visual.attn_pool.query": torch.zeros(4, 64)}, tmp_path / "coca.safetensors")
    with pytest.raises(InputError, match="does not model.*visual.attn_pool.query"):
        load_clip(tmp_path / "coca.safetensors", quick_gelu=True)
    save_file({k: v for k, v in state.items() if k != "visual.ln_post.bias"}, tmp_path / "cut.safetensors")
    with pytest.raises(InputError, match="cut.safetensors.*lacks.*visual.ln_post.bias"):
        load_clip(tmp_path / "cut.safetensors", quick_gelu=True)
    save_file(state, tmp_path / "vit.safetensors")
    with pytest.raises(InputError, match="not divisible by 5 heads"):
        load_clip(tmp_path / "vit.safetensors", quick_gelu=True, heads=5)


def test_similarity_pairs_images():
    from mcjax.models.clip import CLIPVisionConfig, CLIPVisionTower

    with pytest.raises(InputError, match="2 generated and 3 reference"):
        clip_image_similarity(CLIPVisionTower(CLIPVisionConfig()), {}, np.zeros((2, 8, 8, 3)), np.zeros((3, 8, 8, 3)))
