"""Fixed-size batches of host arrays, so a compiled program sees one batch shape and compiles once."""

from collections.abc import Iterator

import jax
import numpy as np


def pad_rows(tree, batch_size: int):
    """Every array of ``tree`` (rows on axis 0, at least one) padded to ``batch_size`` rows by repeating its last row:
    padding rows are valid inputs (a repeated condition, a repeated image), never out-of-range values."""

    def pad(a):
        a = np.asarray(a)
        return np.concatenate([a, np.repeat(a[-1:], batch_size - len(a), axis=0)])

    return jax.tree.map(pad, tree)


def fixed_size_batches(tree, batch_size: int) -> Iterator[tuple[object, int]]:
    """(batch of ``tree`` padded to ``batch_size`` rows, number of real rows) over all rows, in order."""
    num_rows = len(jax.tree.leaves(tree)[0])
    for start in range(0, num_rows, batch_size):
        rows = slice(start, start + batch_size)
        yield pad_rows(jax.tree.map(lambda a, rows=rows: a[rows], tree), batch_size), min(batch_size, num_rows - start)
