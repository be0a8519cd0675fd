"""Images/s of the mcLDM's latent precomputation from a folder of JPEGs (decode + resize + encode), and peak memory.

    python benchmarks/image_encode_throughput.py --num_images 20000 --image_size 32

Writes ``num_images`` synthetic JPEGs (coloured shapes, ``source_size`` px wide) into a temporary folder, then runs
what ``mcjax.train.first_stage.latents_for`` runs: ``ImageFiles`` decodes and resizes batches in a thread pool
while the first stage (configs/geobiked_first_stage.py's default small KL autoencoder, randomly initialised: the
speed is the same) encodes the previous batch, and ``precompute_latents`` streams the latents to a ``.npy`` file.
Compilation is timed on its own. Peak host memory is ``ru_maxrss`` of this process (JAX's runtime included); the
latents never sit in memory whole. Prints one JSON line. Unless XLA_FLAGS is already set, it enables the XLA:CPU
option that leaves convolutions to XLA's own kernels (docs: benchmarks/README.md).
"""

import argparse
import json
import os
import random
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from mcjax import runtime  # light: no JAX until XLA_FLAGS is set


def write_jpeg(folder: str, index: int, source_size: int) -> str:
    """A coloured disc or square on white, in one of 100 subfolders."""
    from PIL import Image, ImageDraw

    rng = random.Random(index)
    image = Image.new("RGB", (source_size, source_size * 3 // 4), "white")
    colour = tuple(rng.randrange(256) for _ in range(3))
    box = (rng.randrange(source_size // 3), rng.randrange(source_size // 4), source_size - 4, source_size * 3 // 4 - 4)
    (ImageDraw.Draw(image).ellipse if index % 2 else ImageDraw.Draw(image).rectangle)(box, fill=colour)
    path = os.path.join(folder, f"{index % 100:02d}", f"{index}.jpg")
    image.save(path, quality=90)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main(args) -> dict:
    os.environ.setdefault("XLA_FLAGS", runtime.IMAGE_XLA_FLAGS)
    import jax
    import numpy as np
    from mcjax.configs.geobiked_first_stage import get_config

    from mcjax.data.image_files import ImageFiles
    from mcjax.models.autoencoder_kl import AutoencoderKL, init_variables
    from mcjax.train import first_stage
    from mcjax.train.latents import _encoder, load_latents, precompute_latents

    config = get_config()
    config.data.image_size = args.image_size
    module = AutoencoderKL(first_stage.architecture(config))
    variables = init_variables(module, jax.random.key(0))
    with tempfile.TemporaryDirectory() as folder:
        for sub in range(100):
            os.makedirs(os.path.join(folder, f"{sub:02d}"))
        start = time.perf_counter()
        with ThreadPoolExecutor() as pool:
            paths = list(pool.map(lambda i: write_jpeg(folder, i, args.source_size), range(args.num_images)))
        write_s = time.perf_counter() - start
        files = ImageFiles(paths, args.image_size)
        start = time.perf_counter()
        first = files[np.arange(args.batch_size)]
        jax.block_until_ready(_encoder(module)(variables, first, None))
        compile_s = time.perf_counter() - start
        rss_before_mb = peak_rss_mb()
        start = time.perf_counter()
        out = precompute_latents(module, variables, files.batches(args.batch_size), args.batch_size,
                                 os.path.join(folder, "latents.npy"), progress=False)
        encode_s = time.perf_counter() - start
        latents = load_latents(out)
        latents_mb = latents.nbytes / 2**20
        assert latents.shape[0] == args.num_images and np.all(np.isfinite(latents[-10:]))
    return {"num_images": args.num_images, "source_px": [args.source_size, args.source_size * 3 // 4],
            "image_size": args.image_size, "latent_shape": list(latents.shape[1:]), "batch_size": args.batch_size,
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "write_jpegs_s": round(write_s, 1),
            "compile_and_first_batch_s": round(compile_s, 2), "encode_s": round(encode_s, 1),
            "images_per_s": round(args.num_images / encode_s, 1), "latents_mb": round(latents_mb, 1),
            "peak_rss_mb_before_encoding": round(rss_before_mb), "peak_rss_mb": round(peak_rss_mb())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=20_000)
    parser.add_argument("--image_size", type=int, default=32, help="square size images are resized to")
    parser.add_argument("--source_size", type=int, default=96, help="width of the generated JPEGs")
    parser.add_argument("--batch_size", type=int, default=64, help="first_stage.latent_batch_size")
    print(json.dumps(main(parser.parse_args())))
