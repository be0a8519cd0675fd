"""CLIP's image tower (ViT) in Flax, CLIP's preprocessing in JAX, and image-image cosine similarity.

The tower is the one OpenAI's CLIP, Hugging Face ``CLIPVisionModelWithProjection`` and open_clip's
``VisionTransformer`` share: patch embedding (no bias), class token, learned position embeddings, pre-LN, pre-norm
transformer blocks (quick_gelu or exact gelu, as the weights were trained), LayerNorm of the class token, linear
projection. Weights are read by ``mcjax.models.clip_weights.load_clip``.

Image-image similarity (generated vs reference) is the cosine of the two projected embeddings, per image.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcjax.errors import InputError
from mcjax.models.clip_weights import read_clip_checkpoint

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ACTIVATIONS = ("quick_gelu", "gelu")


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """The tower's shape (read from the weights) and how its images are prepared (from the checkpoint's config)."""

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    embed_dim: int = 512  # the projection's output
    act: str = "quick_gelu"  # "quick_gelu" (OpenAI-trained weights) | "gelu" (exact, erf)
    ln_eps: float = 1e-5
    layer_scale: bool = False  # open_clip's ls_1 / ls_2 (ls_init_value set)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self):
        if self.act not in ACTIVATIONS:
            raise InputError(f"CLIP activation {self.act!r} is not supported; expected one of {ACTIVATIONS}")
        if self.width % self.heads:
            raise InputError(f"CLIP width {self.width} is not divisible by {self.heads} heads")
        if self.image_size % self.patch_size:
            raise InputError(f"CLIP image size {self.image_size} is not a multiple of patch size {self.patch_size}")


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class Attention(nn.Module):
    """Multi-head self-attention with separate q / k / v projections (open_clip's in_proj is split on loading)."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, x_BxTxD):
        B, T, D = x_BxTxD.shape
        head_dim = D // self.heads

        def split(name):
            return nn.Dense(D, name=name)(x_BxTxD).reshape(B, T, self.heads, head_dim)

        q_BxTxHxd, k_BxTxHxd, v_BxTxHxd = split("q"), split("k"), split("v")
        logits_BxHxTxT = jnp.einsum("bqhd,bkhd->bhqk", q_BxTxHxd, k_BxTxHxd) * head_dim**-0.5
        weights_BxHxTxT = jax.nn.softmax(logits_BxHxTxT, axis=-1)
        out_BxTxD = jnp.einsum("bhqk,bkhd->bqhd", weights_BxHxTxT, v_BxTxHxd).reshape(B, T, D)
        return nn.Dense(D, name="out")(out_BxTxD)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); optional layer scale on each branch."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, x_BxTxD):
        c = self.config
        h_BxTxD = Attention(c.width, c.heads, name="attn")(_layer_norm(c.ln_eps, "ln_1")(x_BxTxD))
        if c.layer_scale:
            h_BxTxD = h_BxTxD * self.param("ls_1", nn.initializers.ones, (c.width,))
        x_BxTxD = x_BxTxD + h_BxTxD
        h_BxTxF = nn.Dense(c.mlp_dim, name="fc1")(_layer_norm(c.ln_eps, "ln_2")(x_BxTxD))
        h_BxTxF = h_BxTxF * jax.nn.sigmoid(1.702 * h_BxTxF) if c.act == "quick_gelu" else nn.gelu(h_BxTxF, False)
        h_BxTxD = nn.Dense(c.width, name="fc2")(h_BxTxF)
        if c.layer_scale:
            h_BxTxD = h_BxTxD * self.param("ls_2", nn.initializers.ones, (c.width,))
        return x_BxTxD + h_BxTxD


class CLIPVisionTower(nn.Module):
    """Normalised pixels [B, S, S, 3] (S = image_size) -> projected image embeddings [B, embed_dim]."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixels_BxSxSx3):
        c = self.config
        if pixels_BxSxSx3.shape[1:] != (c.image_size, c.image_size, 3):
            raise InputError(f"CLIP tower needs [B, {c.image_size}, {c.image_size}, 3], got {pixels_BxSxSx3.shape}")
        P = c.patch_size
        patches_BxGxGxD = nn.Conv(c.width, (P, P), strides=P, padding="VALID", use_bias=False, name="patch_embed")(
            pixels_BxSxSx3
        )
        B = patches_BxGxGxD.shape[0]
        patches_BxNxD = patches_BxGxGxD.reshape(B, -1, c.width)  # row-major, as torch's flatten(2)
        num_tokens = patches_BxNxD.shape[1] + 1
        cls_D = self.param("class_embedding", nn.initializers.normal(c.width**-0.5), (c.width,))
        pos_TxD = self.param("position_embedding", nn.initializers.normal(c.width**-0.5), (num_tokens, c.width))
        cls_Bx1xD = jnp.broadcast_to(cls_D, (B, 1, c.width))
        x_BxTxD = jnp.concatenate([cls_Bx1xD, patches_BxNxD], axis=1) + pos_TxD
        x_BxTxD = _layer_norm(c.ln_eps, "ln_pre")(x_BxTxD)
        for i in range(c.layers):
            x_BxTxD = Block(c, name=f"block_{i}")(x_BxTxD)
        pooled_BxD = _layer_norm(c.ln_eps, "ln_post")(x_BxTxD[:, 0])
        return nn.Dense(c.embed_dim, use_bias=False, name="proj")(pooled_BxD)


def clip_preprocess(images_BxHxWx3, config: CLIPVisionConfig) -> jax.Array:
    """Images in [0, 1] -> the tower's input, as CLIP prepares them (open_clip / torchvision on tensors).

    Shortest side resized to ``image_size`` (bicubic, antialiased, a = -0.5, as torchvision's and PIL's), the long
    side to ``int(size * long / short)``; centre crop; values clipped to [0, 1] (PIL's uint8 clips too);
    per-channel mean / std.
    """
    images_BxHxWx3 = jnp.asarray(images_BxHxWx3, jnp.float32)
    if images_BxHxWx3.ndim != 4 or images_BxHxWx3.shape[-1] != 3:
        raise InputError(f"CLIP needs images as [B, H, W, 3] in [0, 1], got shape {images_BxHxWx3.shape}")
    B, H, W, _ = images_BxHxWx3.shape
    S = config.image_size
    new_h, new_w = (S, int(S * W / H)) if H <= W else (int(S * H / W), S)
    x_BxhxwxC = images_BxHxWx3
    if (new_h, new_w) != (H, W):
        x_BxhxwxC = jax.image.resize(images_BxHxWx3, (B, new_h, new_w, 3), "bicubic", antialias=True)
    top, left = int(round((new_h - S) / 2.0)), int(round((new_w - S) / 2.0))
    x_BxSxSx3 = jnp.clip(x_BxhxwxC[:, top : top + S, left : left + S], 0.0, 1.0)
    return (x_BxSxSx3 - jnp.asarray(config.mean)) / jnp.asarray(config.std)


def clip_image_embeddings(module: CLIPVisionTower, variables: dict, images_BxHxWx3) -> jax.Array:
    """[B, embed_dim] projected (not normalised) embeddings of images in [0, 1], any size."""
    return _jitted_embed(module)(variables, jnp.asarray(images_BxHxWx3, jnp.float32))


@functools.lru_cache(maxsize=8)
def _jitted_embed(module: CLIPVisionTower):
    """One compiled program per tower (Linen modules are hashable), retraced only for new image shapes."""
    return jax.jit(lambda variables, images: module.apply(variables, clip_preprocess(images, module.config)))


def cosine_similarity(a_BxE, b_BxE, eps: float = 1e-8) -> jax.Array:
    """[B] cosine of paired rows; eps keeps an all-zero embedding at 0 instead of NaN."""
    a_BxE = a_BxE / jnp.maximum(jnp.linalg.norm(a_BxE, axis=-1, keepdims=True), eps)
    b_BxE = b_BxE / jnp.maximum(jnp.linalg.norm(b_BxE, axis=-1, keepdims=True), eps)
    return jnp.sum(a_BxE * b_BxE, axis=-1)


def clip_image_similarity(module: CLIPVisionTower, variables: dict, generated_BxHxWx3, reference_BxHxWx3) -> jax.Array:
    """[B] CLIP cosine similarity of each generated image with its reference image (both [B, H, W, 3] in [0, 1])."""
    if jnp.shape(generated_BxHxWx3)[0] != jnp.shape(reference_BxHxWx3)[0]:
        raise InputError(
            f"CLIP similarity pairs images: got {jnp.shape(generated_BxHxWx3)[0]} generated and "
            f"{jnp.shape(reference_BxHxWx3)[0]} reference images"
        )
    return cosine_similarity(
        clip_image_embeddings(module, variables, generated_BxHxWx3),
        clip_image_embeddings(module, variables, reference_BxHxWx3),
    )


def load_clip(
    path, quick_gelu: bool | None = None, model_name: str | None = None, heads: int | None = None
) -> tuple[CLIPVisionTower, dict, int]:
    """(module, variables, image_size) of a CLIP image tower from a Hugging Face or open_clip checkpoint.

    ``path``: a HF folder (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``), an open_clip folder
    or file (``open_clip_model.safetensors``, ``*.bin``, ``*.pt`` state dicts; ``open_clip_config.json`` beside it is
    read). ``quick_gelu`` / ``model_name`` (open_clip's, e.g. "ViT-B-32-quickgelu") / ``heads`` override what the
    files say; an open_clip file with neither config nor name needs ``quick_gelu``.
    """
    fields, params = read_clip_checkpoint(path, quick_gelu=quick_gelu, model_name=model_name, heads=heads)
    module = CLIPVisionTower(CLIPVisionConfig(**fields))
    size = module.config.image_size
    expected = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)  # noqa: E731
    if jax.tree.structure(expected) != jax.tree.structure(params) or shapes(expected) != shapes(params):
        raise InputError(f"CLIP checkpoint {str(path)!r}: parameter shapes do not form one consistent ViT tower")
    return module, {"params": jax.tree.map(jnp.asarray, params)}, size
