"""Gradients of a 3×3 convolution of small maps: XLA's convolution against mcjax's (``mcjax.models.layers``).

    python benchmarks/small_conv.py                      # 2×2 maps at 16 … 1,024 channels, batch 8
    python benchmarks/small_conv.py --maps 4x256 4x512   # HxC pairs; maps not smaller than the kernel: the same program

mcjax computes a stride-1 convolution of a map smaller than its kernel as one matrix product of the map's patches with
the kernel. For each map it compiles and runs the gradient of sum(conv(x, w)²) with respect to x and w both ways, one
after the other in this process, and prints compile times, the best of ``--rounds`` rounds of ``--iters`` calls, the
ratio (XLA / mcjax, faster > 1) and the largest difference of the gradients relative to XLA's.
"""

import argparse
import time


def time_gradient(conv, x, w, iters: int, rounds: int):
    """(compile s, best s per call, gradients) of grad(sum(conv(x, w)²)) with respect to (x, w)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    numbers = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))

    def loss(x, w):
        return jnp.sum(jnp.square(conv(x, w, (1, 1), "SAME", dimension_numbers=numbers)))

    start = time.perf_counter()
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
    compile_s = time.perf_counter() - start
    gradients = jax.block_until_ready(compiled(x, w))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            out = compiled(x, w)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / iters)
    return compile_s, best, gradients


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", nargs="+", default=["2x16", "2x32", "2x64", "2x128", "2x256", "2x512", "2x1024"],
                        help="HxC: a square map of H×H with C input and output channels")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import jax
    import numpy as np
    from jax import lax

    from mcjax.models.layers import conv_general_dilated

    print("map | XLA compile, run | mcjax compile, run | run ratio | max rel. diff")
    for spec in args.maps:
        size, channels = (int(v) for v in spec.split("x"))
        x = jax.random.normal(jax.random.key(0), (args.batch_size, size, size, channels))
        w = jax.random.normal(jax.random.key(1), (3, 3, channels, channels)) / np.sqrt(9 * channels)
        xla = time_gradient(lax.conv_general_dilated, x, w, args.iters, args.rounds)
        ours = time_gradient(conv_general_dilated, x, w, args.iters, args.rounds)
        difference = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(ours[2], xla[2]))
        print(f"{size}×{size}×{channels} | {xla[0]:.2f} s, {xla[1] * 1e3:.3f} ms | {ours[0]:.2f} s, "
              f"{ours[1] * 1e3:.3f} ms | {xla[1] / ours[1]:.2f}× | {difference:.1e}", flush=True)


if __name__ == "__main__":
    main()
