"""Keras 2 backend of channel pruning: remove whole filters and neurons from a tf_keras model.

The pruned model is physically narrower (fewer filters, fewer units), so it is
smaller and faster on any CPU, with no sparse kernels needed. Three steps:

1. :func:`channel_graph.analyze` finds which output channels can be removed
   (one rule per layer type; channels joined by Add & co. go together).
2. Gradual pruning during fine-tuning: every ``frequency`` steps the weakest
   filters (L1 or L2 norm of the whole filter, :mod:`channel_choice`) are masked
   to zero, with the number of masked channels ramping like tfmot's
   PolynomialDecay (:func:`schedules.schedule_steps`). Masks zero the producing
   kernel slice and bias, and the per-channel parameters of what follows
   (BatchNormalization gamma/beta/moving mean, DepthwiseConv slices), so a masked
   channel is exactly zero everywhere downstream.
3. :func:`channel_rebuild.rebuild_narrow` builds the narrower functional model and
   copies the kept weight slices; it is then fine-tuned briefly.

Typical use (what the Pruner executor does):

    result = prune_channels(model, train_ds, target_sparsity=0.65,
                            train_steps=300, finetune_steps=150,
                            learning_rate=1e-3,
                            loss="sparse_categorical_crossentropy", seed=0)
    export_narrow_model(result.model, model, serving_dir, samples)
"""

import contextlib
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.common import signatures as signatures_lib
from tfx_compression.components.pruner import channel_graph
from tfx_compression.components.pruner import channel_rebuild as rebuild
from tfx_compression.components.pruner import channel_training
from tfx_compression.components.pruner.channel_training import ChannelPruneResult


class _GradualChannelPruning(channel_training.GradualMasks,
                             keras.callbacks.Callback):
  """Masks the weakest channels at scheduled steps; keeps them zero after each step."""

  def _mask_variable(self, init, var):
    return tf.Variable(init, trainable=False, dtype=var.dtype)

  def _multiply(self, var, mask):
    return var * mask

  def _compile(self, fn):
    return tf.function(fn)


@contextlib.contextmanager
def _seeded(seed: Optional[int]):
  if seed is not None:
    keras.utils.set_random_seed(seed)
  yield


def _fit(model, ds, steps: int, learning_rate: float, loss, parameter: str,
         callbacks=None, decay: bool = False) -> None:
  channel_training.fit(keras, model, ds, steps, learning_rate, loss, parameter,
                       callbacks=callbacks, decay=decay, build_slots=True)


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
  """Removes whole filters and neurons, then fine-tunes the narrow model.

  ``model`` is never modified. During ``train_steps`` a copy is fine-tuned
  while the weakest channels (filter L1/L2 norm) are masked to zero, more of
  them every ``frequency`` steps until the target; then the narrow model is
  rebuilt without them and fine-tuned for ``finetune_steps``.

  Step-wise search: pass a model this function already narrowed, a higher
  ``target_sparsity`` and ``original_channels=info['channels_before']`` of the
  first call; the target is then relative to the original channel counts and
  only the extra channels are removed, so each step costs only its own
  training steps.

  Example:

      r1 = prune_channels(model, ds, target_sparsity=0.5, train_steps=200,
                          finetune_steps=100, loss=loss)
      r2 = prune_channels(r1.model, ds, target_sparsity=0.7, train_steps=200,
                          finetune_steps=100, loss=loss,
                          original_channels=r1.info["channels_before"])

  Args:
    model: a functional or Sequential tf_keras model.
    train_ds: batched (features, label) dataset (repeated as needed).
    target_sparsity: fraction of output channels to remove, in [0, 1).
    ranking: 'per_layer' (each layer loses the fraction) or 'global' (ranked
      together after dividing each layer's norms by their mean).
    norm: 'l1' or 'l2' of the whole filter/neuron.
    layer_filter: callable(layer) -> bool selecting candidate layers; None =
      every Dense/Conv/SeparableConv layer that does not produce an output.
    explicit_layers: names the user listed exactly; blocked ones fail (see
      :func:`analyze`).
    train_steps: gradual pruning steps (0: one-shot removal).
    finetune_steps: steps after the rebuild.
    begin_step, end_step, frequency: the gradual schedule
      (see :func:`schedule_steps`).
    learning_rate: Adam learning rate for both phases.
    loss: Keras loss (object or name).
    seed: random seed (tf_keras.utils.set_random_seed), None to leave it.
    eval_ds: optional batched dataset; its loss on the result goes to
      ``info['eval_loss']``.
    original_channels: layer -> channel count the targets are relative to.

  Returns:
    ChannelPruneResult(model, info).

  Raises:
    channel_graph.ChannelPruningError: see :func:`channel_graph.analyze` and
      :func:`channel_choice.removal_targets`.
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
    analyze=channel_graph.analyze, rebuild_narrow=rebuild.rebuild_narrow,
    count_macs=rebuild.count_macs, fit=_fit, callback=_GradualChannelPruning,
    seeded=_seeded)


def export_narrow_model(narrow_model, original_model, path: str,
                        sample_serialized_examples: Optional[Sequence[bytes]] = None,
                        raw_feature_spec: Optional[Mapping[str, Any]] = None,
                        label_key: Optional[str] = None) -> Dict[str, Any]:
  """Saves the narrow model as a Keras SavedModel with the original's signatures.

  The original's serving functions read the wide model's variables, so each is
  re-created for the narrow model (serialized tf.Examples -> parse -> optional
  ``tft_layer`` -> model -> the same output names), after checking that the
  re-created function, run on the wide original, reproduces the original's
  outputs. Signatures that read none of the model's weights (TFX's
  ``transform_features``) are kept as they are. The result loads with plain
  ``tf.saved_model.load``.

  Example:

      export_narrow_model(result.model, trainer_model,
                          os.path.join(staging, "Format-Serving"),
                          sample_serialized_examples=examples[:32])

  Args:
    narrow_model: from :func:`prune_channels`. Its ``tft_layer`` attribute is
      set to the original's when there is one.
    original_model: the tf_keras model loaded from the Trainer's SavedModel.
    path: where to write the SavedModel.
    sample_serialized_examples: serialized raw tf.Examples to check the
      signatures on (synthesized from the feature spec when None).
    raw_feature_spec: raw features the serving signature parses (label
      excluded); None: read from the original signature's ParseExampleV2 op.
    label_key: dropped from ``raw_feature_spec`` and from transformed features.

  Returns:
    {'signatures': [names], 'regenerated': [names], 'kept': [names]}.

  Raises:
    signatures_lib.SignatureExportError: a signature cannot be re-created
      exactly; the message names it and says what to do.
  """
  return signatures_lib.save_with_signatures(
      narrow_model, original_model, path,
      sample_serialized_examples=sample_serialized_examples,
      raw_feature_spec=raw_feature_spec, label_key=label_key,
      alternative="sparsity_structure='unstructured' (it keeps the original "
      "signatures)")

