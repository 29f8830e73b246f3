"""Channel pruning of a Keras 3 functional model: whole filters and neurons removed.

The Keras 3 backend of ``keras2_channels`` (tf_keras): the same three steps, the
same rules and the same code (``channel_graph``, ``channel_rebuild``,
``channel_choice``, ``channel_training``), with Keras 3's side of the graph read
through ``keras3_channel_access``. This module binds them to Keras 3 and holds
what is Keras 3's own: the masking callback, the seeding and ``_fit``.

1. :func:`analyze` follows every output channel of the Dense / Conv1D/2D/3D /
   SeparableConv1D/2D layers through the graph (``channel_rules``: BatchNorm,
   DepthwiseConv, pooling, activations, Flatten -> Dense, Reshape, Concatenate,
   the joins, and gating Multiplys such as squeeze-and-excitation).
2. Gradual masking during fine-tuning: at the steps of
   ``schedules.schedule_steps`` the weakest channels are masked to zero
   (producing kernel slice and bias, BatchNormalization gamma/beta/moving mean,
   DepthwiseConv slices), so a masked channel is zero everywhere downstream.
3. :func:`rebuild_narrow` builds a new Keras 3 functional model from the layer
   configs with the kept weight slices: it computes what the wide model with
   those channels zeroed computes. It is then fine-tuned (cosine to zero).

Public API (keyword names as ``keras2_channels``):

    analyze(model, layer_filter=None, explicit_layers=None) -> ChannelGraph
    select_channels(model, graph, target_sparsity, ranking, norm) -> {layer: kept}
    weight_masks(graph, dropped), zero_channels(model, graph, kept)
    rebuild_narrow(graph, kept, model=None) -> keras.Model
    count_macs(model) -> int
    prune_channels(model, train_ds, *, target_sparsity, ranking, norm,
                   layer_filter, explicit_layers, train_steps, finetune_steps,
                   begin_step, end_step, frequency, learning_rate, loss, seed,
                   eval_ds, original_channels) -> ChannelPruneResult

Example:

    result = prune_channels(model, train_ds, target_sparsity=0.75,
                            train_steps=300, finetune_steps=150, loss=loss)
    result.model.save("/tmp/narrow.keras")
"""

import contextlib
from typing import Any, Callable, Collection, Mapping, Optional

import keras

from tfx_compression.components.common import distillation
from tfx_compression.components.pruner import channel_graph
from tfx_compression.components.pruner import channel_rebuild
from tfx_compression.components.pruner import channel_training
from tfx_compression.components.pruner import keras3_magnitude
from tfx_compression.components.pruner.channel_choice import select_channels  # noqa: F401
from tfx_compression.components.pruner.channel_graph import ChannelGraph
from tfx_compression.components.pruner.channel_graph import ChannelPruningError  # noqa: F401
from tfx_compression.components.pruner.channel_rebuild import rebuild_narrow  # noqa: F401
from tfx_compression.components.pruner.channel_rebuild import weight_masks  # noqa: F401
from tfx_compression.components.pruner.channel_rebuild import zero_channels  # noqa: F401
from tfx_compression.components.pruner.channel_training import ChannelPruneResult
from tfx_compression.components.pruner.keras3_channel_access import ACCESS

# --------------------------------------------------------------------------
# The analysis and the rebuild: channel_graph and channel_rebuild, on Keras 3.
# --------------------------------------------------------------------------


def analyze(model, layer_filter: Optional[Callable[[Any], bool]] = None,
            explicit_layers: Optional[Collection[str]] = None) -> ChannelGraph:
  """Finds the output channels of the Keras 3 ``model`` that may be removed.

  Same arguments, rules and errors as ``channel_graph.analyze`` (tf_keras).

  Example:

      graph = analyze(model, layer_filter=lambda l: l.name != "stem")
      graph.prunable_layers()   # ['conv2', 'dense1']
  """
  return channel_graph.analyze(model, layer_filter, explicit_layers,
                               access=ACCESS)


def count_macs(model) -> int:
  """Multiply-adds of one example through Dense and convolution layers."""
  return channel_rebuild.count_macs(model, ACCESS)


# --------------------------------------------------------------------------
# Gradual pruning and the end-to-end function.
# --------------------------------------------------------------------------


class _GradualChannelPruning(channel_training.GradualMasks,
                             keras.callbacks.Callback):
  """Masks the weakest channels at scheduled steps; keeps them zero after each step."""

  def _mask_variable(self, init, var):
    return keras.Variable(init.astype(var.dtype), trainable=False)

  def _multiply(self, var, mask):
    return keras.ops.multiply(var, mask)

  def _compile(self, fn):
    if keras.backend.backend() == "tensorflow":
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      return tf.function(fn)
    return fn


def _seeded(seed: Optional[int]):
  # Seeded and with deterministic ops, as keras3_magnitude: same seed and data,
  # same weights on CPU (without it, two runs differed in the 2nd decimal).
  if seed is None:
    return contextlib.nullcontext()
  return keras3_magnitude.deterministic(seed)


def _fit(model, ds, steps: int, learning_rate: float, loss, parameter: str,
         callbacks=None, decay: bool = False) -> None:
  channel_training.fit(keras, model, ds, steps, learning_rate, loss, parameter,
                       callbacks=callbacks, decay=decay,
                       metrics=distillation.train_metrics(loss))


def prune_channels(model, train_ds, *, target_sparsity: float,
                   ranking: str = "per_layer", norm: str = "l1",
                   layer_filter: Optional[Callable[[Any], bool]] = None,
                   explicit_layers: Optional[Collection[str]] = None,
                   train_steps: int, finetune_steps: int, begin_step: int = 0,
                   end_step: Optional[int] = None,
                   frequency: Optional[int] = None,
                   learning_rate: float = 1e-3, loss: Any,
                   seed: Optional[int] = 0, eval_ds=None,
                   original_channels: Optional[Mapping[str, int]] = None
                   ) -> ChannelPruneResult:
  """Removes whole filters and neurons of a Keras 3 model, then fine-tunes it.

  Same arguments, steps and result as ``keras2_channels.prune_channels``:
  ``model`` is never modified; a copy is fine-tuned for ``train_steps`` while
  the weakest channels are masked on the schedule, the narrow model is rebuilt
  and fine-tuned for ``finetune_steps``.

  Example:

      r1 = prune_channels(model, ds, target_sparsity=0.5, train_steps=200,
                          finetune_steps=100, loss=loss)
      r2 = prune_channels(r1.model, ds, target_sparsity=0.7, train_steps=200,
                          finetune_steps=100, loss=loss,
                          original_channels=r1.info["channels_before"])

  Raises:
    ChannelPruningError: see :func:`analyze` and ``channel_choice.removal_targets``.
    ValueError, TypeError: bad arguments, naming the parameter.
  """
  return channel_training.prune_channels(
      _BACKEND, model, train_ds, target_sparsity=target_sparsity,
      ranking=ranking, norm=norm, layer_filter=layer_filter,
      explicit_layers=explicit_layers, train_steps=train_steps,
      finetune_steps=finetune_steps, begin_step=begin_step, end_step=end_step,
      frequency=frequency, learning_rate=learning_rate, loss=loss, seed=seed,
      eval_ds=eval_ds, original_channels=original_channels)


_BACKEND = channel_training.Backend(
    analyze=analyze, rebuild_narrow=rebuild_narrow, count_macs=count_macs,
    fit=_fit, callback=_GradualChannelPruning, seeded=_seeded)
