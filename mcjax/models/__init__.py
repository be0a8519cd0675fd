"""Flax Linen models of mcjax: the mcVAE and the Stable Diffusion VAE (AutoencoderKL) port."""

from mcjax.models.autoencoder_kl import (
    SD_VAE_CONFIG,
    AutoencoderKL,
    AutoencoderKLConfig,
    decode_from_latents,
    encode_to_latents,
    init_variables,
)
from mcjax.models.autoencoder_kl_weights import from_pretrained, save_pretrained
from mcjax.models.vae import MCVAE

__all__ = ["MCVAE", "SD_VAE_CONFIG", "AutoencoderKL", "AutoencoderKLConfig", "decode_from_latents",
           "encode_to_latents", "from_pretrained", "init_variables", "save_pretrained"]
