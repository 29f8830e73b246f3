"""Assertions shared by tests, on numpy only (safe in Keras 2 and Keras 3 tests)."""

import numpy as np


def assert_same_weights(want, got) -> None:
  """Two weight lists (``model.get_weights()``) are equal, array by array.

  The lengths are compared first: ``zip`` alone would pass on a shorter list.
  """
  assert len(want) == len(got), (len(want), len(got))
  for i, (a, b) in enumerate(zip(want, got)):
    np.testing.assert_array_equal(a, b, err_msg=f"weight {i}")
