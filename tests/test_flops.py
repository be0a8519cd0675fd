import jax
import jax.numpy as jnp
from jax import lax

from mcjax.flops import model_flops


def conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_convolution_and_its_gradients():
    x, w = jnp.zeros((2, 8, 8, 3)), jnp.zeros((3, 3, 3, 5))
    forward = 2 * (2 * 8 * 8 * 5) * (3 * 3 * 3)  # 2 × outputs × window × input channels
    assert model_flops(conv, x, w) == forward
    # The input and weight gradients are convolutions of the same size.
    assert model_flops(jax.grad(lambda x, w: conv(x, w).sum(), argnums=(0, 1)), x, w) == 3 * forward


def test_products_inside_jit_scan_and_cond():
    a, b = jnp.zeros((4, 6)), jnp.zeros((6, 7))
    product = 2 * 4 * 6 * 7
    assert model_flops(jnp.matmul, a, b) == product

    @jax.jit
    def scanned(a, b):
        return lax.scan(lambda c, _: (c, c @ b), a, None, length=5)[1]

    assert model_flops(scanned, a, b) == 5 * product
    # A cond counts its costliest branch, whichever runs.
    def costly_or_cheap(a, b, p):
        return lax.cond(p, lambda: (a @ b).sum(), lambda: a.sum())

    assert model_flops(costly_or_cheap, a, b, False) == product
