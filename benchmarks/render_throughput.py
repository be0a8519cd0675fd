"""How long the renderer takes to draw every GeoBiked bike (the latent diffusion data), per image size.

    python benchmarks/render_throughput.py                 # 64, 128 and 256 px, ≈ 1 min on 2 CPU cores
    python benchmarks/render_throughput.py --sizes 512

Times ``mcjax.data.render.render`` on all 4,355 rows, compile included (one program per size), from a warm process.
No XLA_FLAGS are set by this script.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    args = parser.parse_args()

    from mcjax.configs.geobiked_vae import get_config

    from mcjax.data import render, tables

    geometry = render.geometry_from_table(tables.table_from_config(get_config().data))
    print(f"{os.cpu_count()} CPU cores, {len(geometry)} bikes")
    for size in args.sizes:
        start = time.perf_counter()
        images = render.render(geometry, size)
        seconds = time.perf_counter() - start
        print(f"{size:5d} px: {seconds:6.1f} s ({len(images) / seconds:7.1f} images/s, "
              f"{images.nbytes / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
