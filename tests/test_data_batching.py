import numpy as np

from mcjax.conditions import Conditions
from mcjax.data.batching import fixed_size_batches


def test_batches_of_a_pytree_repeat_the_last_row():
    conditions = Conditions(np.arange(10, dtype=np.int32).reshape(5, 2), np.arange(5, dtype=np.float32)[:, None])
    batches = list(fixed_size_batches(conditions, 2))
    assert [n for _, n in batches] == [2, 2, 1]
    last, _ = batches[-1]
    np.testing.assert_array_equal(last.cat_BxK, [[8, 9], [8, 9]])  # valid categories, not zeros
    np.testing.assert_array_equal(last.num_BxJ, [[4.0], [4.0]])
    rows = np.concatenate([b.cat_BxK[:n] for b, n in batches])
    np.testing.assert_array_equal(rows, conditions.cat_BxK)
