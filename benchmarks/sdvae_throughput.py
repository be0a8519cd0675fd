"""Encode/decode throughput of the SD 2.1 VAE: mcjax (jit) vs diffusers' PyTorch AutoencoderKL, same weights.

    python benchmarks/sdvae_throughput.py --image_size 128 --batch_size 2 --iters 5

The torch model is randomly initialised, saved in diffusers format and loaded by mcjax, so both run
the same network. Compilation is timed on its own; throughput is over warm iterations. Prints one
JSON line. Unless XLA_FLAGS is already set, it enables an XLA:CPU option that leaves convolutions
and dots to XLA's own kernels, which is faster than the YNNPACK path for this network on CPU.
"""

import argparse
import json
import os
import tempfile
import time
from functools import partial

from mcjax import runtime  # light: no JAX until XLA_FLAGS is set

SD21_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}


def time_jax(fn, *args, iters: int):
    """(compile seconds, items/s over warm iterations)."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    for _ in range(iters):
        out = compiled(*args)
    jax.block_until_ready(out)
    return compile_s, iters * args[-1].shape[0] / (time.perf_counter() - start)


def time_torch(fn, x, iters: int):
    """Items/s over warm iterations under inference_mode (synchronising the GPU when x lives there)."""
    import torch

    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode():
        fn(x)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            fn(x)
        sync()
    return iters * x.shape[0] / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--torch_device", default="cpu", help="cpu, or cuda on a GPU machine")
    args = parser.parse_args()
    os.environ.setdefault("XLA_FLAGS", runtime.IMAGE_XLA_FLAGS)  # read when jax is first imported, just below
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import AutoencoderKL as TorchAutoencoderKL

    from mcjax.models.autoencoder_kl_weights import from_pretrained

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    torch_dtype = getattr(torch, args.dtype)
    model = TorchAutoencoderKL(**SD21_VAE).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        module, variables = from_pretrained(tmp, dtype=jnp.dtype(args.dtype))
    model = model.to(device=args.torch_device, dtype=torch_dtype)

    f = module.config.downsampling_factor
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    latents = rng.normal(size=(args.batch_size, args.image_size // f, args.image_size // f, 4)).astype(np.float32)
    enc_compile_s, jax_encode = time_jax(
        partial(module.apply, method=module.encode), variables, jnp.asarray(images), iters=args.iters
    )
    dec_compile_s, jax_decode = time_jax(
        partial(module.apply, method=module.decode), variables, jnp.asarray(latents), iters=args.iters
    )
    images_nchw, latents_nchw = (torch.from_numpy(a).permute(0, 3, 1, 2).to(args.torch_device, torch_dtype)
                                 for a in (images, latents))
    torch_encode = time_torch(lambda x: model.encode(x).latent_dist.mean, images_nchw, args.iters)
    torch_decode = time_torch(lambda z: model.decode(z).sample, latents_nchw, args.iters)

    result = {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "iters": args.iters,
        "dtype": args.dtype,
        "device": str(jax.devices()[0]),
        "torch_device": args.torch_device,
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "mcjax_encode_images_per_s": round(jax_encode, 3),
        "torch_encode_images_per_s": round(torch_encode, 3),
        "encode_ratio_mcjax_over_torch": round(jax_encode / torch_encode, 3),
        "mcjax_decode_images_per_s": round(jax_decode, 3),
        "torch_decode_images_per_s": round(torch_decode, 3),
        "decode_ratio_mcjax_over_torch": round(jax_decode / torch_decode, 3),
        "mcjax_encode_compile_s": round(enc_compile_s, 2),
        "mcjax_decode_compile_s": round(dec_compile_s, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
