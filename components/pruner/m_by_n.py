"""M:N pruning: at least M zeros in every N consecutive input weights (e.g. 2:4).

The strategy for ``sparsity_structure='M:N'``. tfmot sets an M:N mask once, at
the first step, whatever the schedule says; the whole fine-tuning then recovers.
Blocks run along the input dimension (axis -2 of a Dense or Conv kernel).

Example:

    m_by_n_violations(kernel, (2, 4))  # 0: every block of 4 has 2 zeros
"""

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from tfx_compression.components.pruner import strategy as strategy_lib
from tfx_compression.components.pruner import unstructured
from tfx_compression.components.pruner.strategy import PruneResult
from tfx_compression.components.pruner.strategy import PruningError


def m_by_n_violations(kernel: np.ndarray, m_by_n: Tuple[int, int]) -> int:
  """Blocks of N consecutive input weights holding fewer than M zeros.

  The input dimension is axis -2 (Dense [in, out], Conv [h, w, in, out]); a
  last partial block counts as padded with zeros, as tfmot pads it.
  """
  m, n = m_by_n
  rows = np.moveaxis(kernel, -2, -1).reshape(-1, kernel.shape[-2])
  pad = (-rows.shape[1]) % n
  rows = np.pad(rows, [(0, 0), (0, pad)])
  zeros = (rows.reshape(rows.shape[0], -1, n) == 0).sum(axis=-1)
  return int((zeros < m).sum())


class MByNStrategy(unstructured.UnstructuredStrategy):
  """Unstructured pruning under a block constraint; measured and exported alike."""

  def _schedule(self, config, steps: int):
    del config, steps  # The mask is set once, at the first step.
    return 0, None, None

  def check(self, pruned, layers: Sequence[str], stats: Dict[str, Any],
            config) -> None:
    """Raises PruningError if a block has fewer than M zeros."""
    del stats
    kernels = strategy_lib.backend(pruned).pruned_kernels(pruned, layers)
    bad = {name: m_by_n_violations(k, config.m_by_n)
           for name, k in kernels.items()}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
      raise PruningError(f"{config.sparsity_structure} blocks not met after "
                         f"pruning (blocks short of zeros per kernel: {bad}).")

  def stage(self, current, train_ds, config, sparsity: float,
            state: Dict[str, Any], *, loss, layers: Sequence[str],
            index: int) -> PruneResult:
    del state  # Each step sets its blocks afresh from the last step's weights.
    block = (int(round(sparsity * config.m_by_n[1])), config.m_by_n[1])
    pruned = strategy_lib.backend(current).prune_to(
        current, train_ds, target_sparsity=sparsity,
        steps=config.stage_steps(), loss=loss, layers=layers, m_by_n=block,
        learning_rate=config.learning_rate, seed=config.seed + index)
    return self._stage_result(pruned, f"{block[0]}:{block[1]}", layers,
                              sparsity)

  def sparsities(self, config) -> List[float]:
    """The search's sparsities mapped to blocks m:N, m = round(s * N)."""
    n = config.m_by_n[1]
    out = []
    for s in config.search_sparsities:
      m = min(n - 1, max(1, int(round(s * n))))
      if not out or m / n > out[-1]:
        out.append(m / n)
    return out
