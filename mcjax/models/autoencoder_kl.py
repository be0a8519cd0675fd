"""Stable Diffusion KL autoencoder (diffusers ``AutoencoderKL``) in Flax Linen, NHWC.

The module tree mirrors diffusers' parameter names (``encoder/down_blocks_0/resnets_1/conv1``
for ``encoder.down_blocks.0.resnets.1.conv1``) so checkpoints map one-to-one; see
``autoencoder_kl_weights`` for loading and saving. GroupNorm always runs in float32, and the
other layers compute in ``dtype`` (e.g. bfloat16) with float32 parameters.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mcjax.errors import InputError
from mcjax.models.layers import GroupNorm

Dtype = Any

DOWN_BLOCK = "DownEncoderBlock2D"
UP_BLOCK = "UpDecoderBlock2D"
GROUP_NORM_EPS = 1e-6
LOGVAR_RANGE = (-30.0, 20.0)

# Keys of a diffusers config.json that describe files or versions, not the architecture.
_IGNORED_CONFIG_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values"}


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
    """Architecture and latent scaling of a diffusers ``AutoencoderKL``; defaults are diffusers' (see SD_VAE_CONFIG)."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, int] = 32  # informative only: the module is resolution-free
    scaling_factor: float = 0.18215
    shift_factor: float | None = None  # SD3/FLUX-style: latents = (z - shift) * scale
    latents_mean: tuple[float, ...] | None = None  # per-channel SDXL-style: (z - mean) * scale / std
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True  # informative only: kept for diffusers round trips
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self):
        if self.shift_factor is not None and self.latents_mean is not None:
            raise InputError("shift_factor and latents_mean are both set; at most one latent shift is supported")
        if (self.latents_mean is None) != (self.latents_std is None):
            raise InputError("latents_mean and latents_std must be given together")
        for name in ("latents_mean", "latents_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.latent_channels:
                raise InputError(f"{name} has {len(value)} entries, expected latent_channels={self.latent_channels}")

    @property
    def downsampling_factor(self) -> int:
        """Image side / latent side, e.g. 8 for four blocks."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers_config(cls, config: dict) -> "AutoencoderKLConfig":
        """Validates a diffusers ``config.json`` dict; unsupported options raise InputError naming them."""
        config = {k: v for k, v in config.items() if k not in _IGNORED_CONFIG_KEYS}
        act_fn = config.pop("act_fn", "silu")
        if act_fn not in ("silu", "swish"):
            raise InputError(f"unsupported act_fn={act_fn!r}: only 'silu' is implemented")
        num_blocks = len(config.get("block_out_channels", (64,)))
        for key, block in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
            types = tuple(config.pop(key, (block,)))
            if any(t != block for t in types):
                raise InputError(f"unsupported {key}={list(types)}: only {block} is implemented")
            if len(types) != num_blocks:
                raise InputError(f"{key} has {len(types)} entries but block_out_channels has {num_blocks}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise InputError(f"unsupported AutoencoderKL config options: {unknown}")
        tuples = ("block_out_channels", "latents_mean", "latents_std", "sample_size")
        kwargs = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in config.items()}
        return cls(**kwargs)

    def to_diffusers_config(self) -> dict:
        """The diffusers ``config.json`` dict of this architecture."""
        num_blocks = len(self.block_out_channels)
        config = {"_class_name": "AutoencoderKL", "act_fn": "silu"}
        config.update({k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()})
        config["down_block_types"] = [DOWN_BLOCK] * num_blocks
        config["up_block_types"] = [UP_BLOCK] * num_blocks
        return config


# The VAE of Stable Diffusion 1.x and 2.x (e.g. stabilityai/stable-diffusion-2-1/vae).
SD_VAE_CONFIG = AutoencoderKLConfig(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768)


def conv(features: int, kernel: int, dtype: Dtype, name: str, stride: int = 1, padding="SAME") -> nn.Conv:
    """A float32-parameter NHWC conv computing in ``dtype``."""
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
    """diffusers ``ResnetBlock2D`` without time embedding: x + conv(silu(norm(conv(silu(norm(x))))))."""

    features: int
    num_groups: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        h = nn.silu(GroupNorm(self.num_groups, GROUP_NORM_EPS, name="norm1")(x_BxHxWxC))
        h = conv(self.features, 3, self.dtype, "conv1")(h)
        h = nn.silu(GroupNorm(self.num_groups, GROUP_NORM_EPS, name="norm2")(h))
        h = conv(self.features, 3, self.dtype, "conv2")(h)
        if x_BxHxWxC.shape[-1] != self.features:
            x_BxHxWxC = conv(self.features, 1, self.dtype, "conv_shortcut")(x_BxHxWxC)
        return x_BxHxWxC + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero-padding one row/column at the bottom/right (diffusers ``padding=0``)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        x_BxHxWxC = jnp.pad(x_BxHxWxC, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv(x_BxHxWxC.shape[-1], 3, self.dtype, "conv", stride=2, padding="VALID")(x_BxHxWxC)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        b, h, w, c = x_BxHxWxC.shape
        x = jnp.broadcast_to(x_BxHxWxC[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
        return conv(c, 3, self.dtype, "conv")(x)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, with residual connection (diffusers ``Attention``)."""

    num_groups: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        b, h, w, c = x_BxHxWxC.shape
        t_BxTxC = GroupNorm(self.num_groups, GROUP_NORM_EPS, name="group_norm")(x_BxHxWxC).reshape(b, h * w, c)
        q, k, v = (nn.Dense(c, dtype=self.dtype, name=n)(t_BxTxC)[:, :, None, :] for n in ("to_q", "to_k", "to_v"))
        o_BxTxC = jax.nn.dot_product_attention(q, k, v)[:, :, 0, :]
        return x_BxHxWxC + nn.Dense(c, dtype=self.dtype, name="to_out_0")(o_BxTxC).reshape(b, h, w, c)


class MidBlock(nn.Module):
    """ResNet, optional self-attention, ResNet at the lowest resolution."""

    num_groups: int
    add_attention: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        c = x_BxHxWxC.shape[-1]
        x = ResnetBlock(c, self.num_groups, self.dtype, name="resnets_0")(x_BxHxWxC)
        if self.add_attention:
            x = SpatialSelfAttention(self.num_groups, self.dtype, name="attentions_0")(x)
        return ResnetBlock(c, self.num_groups, self.dtype, name="resnets_1")(x)


class ResolutionBlock(nn.Module):
    """``num_resnets`` ResNet blocks, then an optional resampler (``DownEncoderBlock2D``/``UpDecoderBlock2D``)."""

    features: int
    num_resnets: int
    num_groups: int
    resample: str | None  # None, "down" or "up"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        for i in range(self.num_resnets):
            x_BxHxWxC = ResnetBlock(self.features, self.num_groups, self.dtype, name=f"resnets_{i}")(x_BxHxWxC)
        if self.resample == "down":
            return Downsample(self.dtype, name="downsamplers_0")(x_BxHxWxC)
        if self.resample == "up":
            return Upsample(self.dtype, name="upsamplers_0")(x_BxHxWxC)
        return x_BxHxWxC


def _output_head(x_BxHxWxC, features: int, num_groups: int, dtype: Dtype):
    """conv_out(silu(conv_norm_out(x))), shared by encoder and decoder (called inside their compact scope)."""
    h = nn.silu(GroupNorm(num_groups, GROUP_NORM_EPS, name="conv_norm_out")(x_BxHxWxC))
    return conv(features, 3, dtype, "conv_out")(h)


class Encoder(nn.Module):
    """Image x_BxHxWxC -> posterior statistics h_Bx(H/f)x(W/f)x(2*latent_channels), f = downsampling_factor."""

    config: AutoencoderKLConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWxC):
        cfg, last = self.config, len(self.config.block_out_channels) - 1
        h = conv(cfg.block_out_channels[0], 3, self.dtype, "conv_in")(x_BxHxWxC.astype(self.dtype))
        for i, features in enumerate(cfg.block_out_channels):
            resample = None if i == last else "down"
            block = ResolutionBlock(
                features, cfg.layers_per_block, cfg.norm_num_groups, resample, self.dtype, name=f"down_blocks_{i}"
            )
            h = block(h)
        h = MidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, self.dtype, name="mid_block")(h)
        return _output_head(h, 2 * cfg.latent_channels, cfg.norm_num_groups, self.dtype)


class Decoder(nn.Module):
    """Latent z_BxhxwxL -> image x_Bx(h*f)x(w*f)xC; up blocks have layers_per_block + 1 ResNets."""

    config: AutoencoderKLConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z_BxhxwxL):
        cfg, last = self.config, len(self.config.block_out_channels) - 1
        h = conv(cfg.block_out_channels[-1], 3, self.dtype, "conv_in")(z_BxhxwxL.astype(self.dtype))
        h = MidBlock(cfg.norm_num_groups, cfg.mid_block_add_attention, self.dtype, name="mid_block")(h)
        for i, features in enumerate(reversed(cfg.block_out_channels)):
            resample = None if i == last else "up"
            block = ResolutionBlock(
                features, cfg.layers_per_block + 1, cfg.norm_num_groups, resample, self.dtype, name=f"up_blocks_{i}"
            )
            h = block(h)
        return _output_head(h, cfg.out_channels, cfg.norm_num_groups, self.dtype)


def sample_posterior(mean_BxhxwxL, logvar_BxhxwxL, key):
    """Reparameterised draw z = mean + exp(logvar / 2) * eps from the diagonal Gaussian posterior."""
    eps = jax.random.normal(key, mean_BxhxwxL.shape, mean_BxhxwxL.dtype)
    return mean_BxhxwxL + jnp.exp(0.5 * logvar_BxhxwxL) * eps


class AutoencoderKL(nn.Module):
    """KL-regularised autoencoder of Stable Diffusion, NHWC; images live in [-1, 1].

    ``dtype`` is the compute dtype (float32 or bfloat16); parameters, GroupNorm and the returned
    posterior statistics and images stay float32.
    """

    config: AutoencoderKLConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg, self.dtype)
        self.decoder = Decoder(cfg, self.dtype)
        self.quant_conv = conv(2 * cfg.latent_channels, 1, self.dtype, None) if cfg.use_quant_conv else None
        self.post_quant_conv = conv(cfg.latent_channels, 1, self.dtype, None) if cfg.use_post_quant_conv else None

    def encode(self, x_BxHxWxC):
        """Posterior (mean, logvar), each Bx(H/f)x(W/f)xL float32, logvar clipped to [-30, 20]."""
        h = self.encoder(x_BxHxWxC)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z_BxhxwxL):
        """Raw decoder output (not clipped), Bx(h*f)x(w*f)xC float32."""
        if self.post_quant_conv is not None:
            z_BxhxwxL = self.post_quant_conv(z_BxhxwxL.astype(self.dtype))
        return self.decoder(z_BxhxwxL).astype(jnp.float32)

    def __call__(self, x_BxHxWxC, key=None):
        """Reconstruction and posterior: (x_hat, (mean, logvar)); z is sampled with ``key``, or the mean if None."""
        mean, logvar = self.encode(x_BxHxWxC)
        z = mean if key is None else sample_posterior(mean, logvar, key)
        return self.decode(z), (mean, logvar)


def init_variables(module: AutoencoderKL, key, image_size: int | None = None):
    """Random variables of ``module``; shapes do not depend on ``image_size`` (default: one latent pixel)."""
    size = image_size or module.config.downsampling_factor
    return jax.jit(module.init)(key, jnp.zeros((1, size, size, module.config.in_channels), jnp.float32))


def _latent_affine(config: AutoencoderKLConfig):
    """(shift, scale) with diffusion latents = (z - shift) * scale; per channel when latents_mean/std are set."""
    if config.latents_mean is not None:
        std = jnp.asarray(config.latents_std, jnp.float32)
        return jnp.asarray(config.latents_mean, jnp.float32), config.scaling_factor / std
    return (config.shift_factor or 0.0), config.scaling_factor


def encode_to_latents(module: AutoencoderKL, variables, images_BxHxWxC, key=None):
    """Scaled latents for a diffusion model: posterior mean (key None) or a sample, then (z - shift) * scale."""
    mean, logvar = module.apply(variables, images_BxHxWxC, method=module.encode)
    z = mean if key is None else sample_posterior(mean, logvar, key)
    shift, scale = _latent_affine(module.config)
    return (z - shift) * scale


def decode_from_latents(module: AutoencoderKL, variables, latents_BxhxwxL):
    """Images in about [-1, 1] from scaled latents: undoes ``encode_to_latents``' scaling and decodes."""
    shift, scale = _latent_affine(module.config)
    return module.apply(variables, latents_BxhxwxL / scale + shift, method=module.decode)
