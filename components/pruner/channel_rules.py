"""What each layer type does to the channels flowing into it: the rules of channel analysis.

One rule per layer type, in two tables: ``RULES`` for layers that matter whether or
not prunable channels reach them (producers, BatchNormalization, DepthwiseConv,
PReLU, Reshape: their inputs are registered for the rebuild) and
``FLOWING_RULES`` for layers that only matter when prunable channels reach them
(pass-through and element-wise layers, Flatten, Concatenate, the joins). Any other
layer that prunable channels reach blocks them. A rule takes a :class:`Call` and
returns (channel ids of the output or None, why the rebuild cannot follow the
channels through the layer or None); :func:`channel_graph.analyze` applies them.

Example:

    rule = rule_for(layer, channels_flow_in=True)
    out_ids, blocked = rule(Call(graph, layer, ins, outs, in_ids, True, None))
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

_L = keras.layers
# Exact types: Conv1DTranspose subclasses Conv1D, DepthwiseConv2D subclasses Conv,
# and a user's subclass of Dense may do anything in call().
DENSE = (_L.Dense,)
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
PRODUCER_TYPES = DENSE + _CONV + SEPARABLE
DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
TRANSPOSED = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
# Channel-wise layers without weights that map 0 to 0 (for channels_last data).
_PASSTHROUGH = (
    _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D,
    _L.GaussianNoise, _L.GaussianDropout, _L.ActivityRegularization,
    _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D,
    _L.AveragePooling1D, _L.AveragePooling2D, _L.AveragePooling3D,
    _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D, _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D, _L.ZeroPadding1D, _L.ZeroPadding2D,
    _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D,
    _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D, _L.RepeatVector,
    _L.Identity)
# Element-wise layers, kept only if they map 0 to 0 (checked numerically).
_ELEMENTWISE = (_L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU,
                _L.ThresholdedReLU, _L.Softmax, _L.Rescaling)
_JOIN = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)


def _width(tensor) -> Optional[int]:
  shape = tensor.shape
  if shape.rank is None or shape.rank == 0:
    return None
  return shape[-1]


def _maps_zero_to_zero(fn: Callable[[tf.Tensor], tf.Tensor]) -> bool:
  try:
    out = fn(tf.zeros([1, 3], tf.float32))
    return bool(np.all(np.asarray(out) == 0))
  except (ValueError, TypeError, tf.errors.OpError):
    return False


def _activation_name(layer) -> str:
  act = getattr(layer, "activation", None)
  return getattr(act, "__name__", str(act))


def _channels_last(layer) -> bool:
  return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _activation_problem(layer) -> Optional[str]:
  """Why a Dense/Conv layer's output channels cannot be zeroed, or None."""
  act = getattr(layer, "activation", None)
  if act is not None and not _maps_zero_to_zero(act):
    return (f"its activation {_activation_name(layer)!r} does not map 0 to 0, "
            "so a removed channel would not be zero")
  return None


def _elementwise_ok(layer) -> bool:
  if isinstance(layer, _L.Rescaling):
    if np.ndim(layer.scale) or np.ndim(layer.offset):
      return False
  return _maps_zero_to_zero(layer)


def _blocker_reason(layer) -> str:
  kind = type(layer).__name__
  if isinstance(layer, _L.Lambda):
    return "a Lambda's function may depend on the channel count"
  if kind in ("TFOpLambda", "SlicingOpLambda"):
    return "a TensorFlow operation applied to a Keras tensor"
  if isinstance(layer, keras.Model):
    return "a nested model"
  if type(layer).__module__.startswith("tf_keras."):
    return f"{kind} is not channel-wise or not supported"
  return "a custom layer"


@dataclasses.dataclass
class Call:
  """One call of a layer in the graph, as the per-type rules see it."""
  graph: Any                          # the channel_graph.ChannelGraph
  layer: Any
  ins: list
  outs: list
  in_ids: List[Optional[np.ndarray]]  # channel ids of each input (None: none)
  candidate: bool                     # the layer is selected for pruning
  output_name: Optional[str]          # the model output its first output is

  @property
  def name(self) -> str:
    return self.layer.name

  @property
  def single(self) -> bool:
    return len(self.ins) == 1 and len(self.outs) == 1

  @property
  def x_ids(self) -> Optional[np.ndarray]:
    return self.in_ids[0] if self.in_ids else None

  @property
  def x_width(self) -> Optional[int]:
    return _width(self.ins[0]) if self.ins else None

  def register(self, kind: str) -> None:
    """Records a layer whose weights or config follow the channels coming in."""
    self.graph.kinds[self.name] = kind
    self.graph.register_input(self.name, self.x_ids)


# A rule: Call -> (channel ids of the output or None, why the rebuild cannot
# follow the channels through this layer or None).
Rule = Callable[[Call], Tuple[Optional[np.ndarray], Optional[str]]]


def _producer(call: Call):
  layer, graph, name = call.layer, call.graph, call.name
  blocked, out_ids = None, None
  if not _channels_last(layer):
    blocked = f"data_format={layer.data_format!r}, not channels_last"
  elif getattr(layer, "groups", 1) != 1:
    blocked = f"a grouped convolution (groups={layer.groups})"
  elif not call.single:
    blocked = f"called on {len(call.ins)} tensors"
  else:
    call.register("producer")
    if call.candidate:
      problem = _activation_problem(layer)
      if call.output_name is not None:
        graph.skipped[name] = f"it produces the model output '{call.output_name}'"
      elif problem:
        graph.skipped[name] = problem
      else:
        if name not in graph.producers:
          width = layer.units if type(layer) in DENSE else layer.filters
          graph.add_producer(
              name, width,
              "pointwise_kernel" if type(layer) in SEPARABLE else "kernel")
        out_ids = graph.producers[name].ids
  if blocked and call.candidate:
    graph.skipped[name] = f"it is {blocked}"
  return out_ids, blocked


def _depthwise(call: Call):
  if not call.single or not _channels_last(call.layer):
    return None, "DepthwiseConv with channels_first data or several inputs"
  call.register("depthwise")
  if call.x_ids is None:
    return None, None
  return np.repeat(call.x_ids, call.layer.depth_multiplier), None


def _batchnorm(call: Call):
  rank = call.ins[0].shape.rank if call.ins else None
  axes = list(np.atleast_1d(call.layer.axis))
  if not call.single or rank is None or axes not in ([-1], [rank - 1]):
    return None, f"normalizes over axis {call.layer.axis}, not the channel axis"
  call.register("batchnorm")
  return call.x_ids, None


def _prelu(call: Call):
  if not call.single:
    return None, f"called on {len(call.ins)} tensors"
  call.register("prelu")
  return call.x_ids, None


def _reshape(call: Call):
  target = tuple(call.layer.target_shape)
  if not call.single:
    return None, f"called on {len(call.ins)} tensors"
  if call.x_ids is not None and (target[-1] != call.x_width
                                 or _width(call.outs[0]) != call.x_width):
    return None, ("it reshapes the channel axis (a Reshape that hard-codes the "
                  "channel count)")
  call.register("reshape")
  return call.x_ids, None


def _channelwise(call: Call):
  if not call.single or not _channels_last(call.layer):
    return None, "several inputs or channels_first data"
  if type(call.layer) in _ELEMENTWISE and not _elementwise_ok(call.layer):
    return None, "it does not map 0 to 0 channel by channel"
  if call.x_width is not None and _width(call.outs[0]) != call.x_width:
    return None, "it changes the channel axis"
  return call.x_ids, None


def _flatten(call: Call):
  if not call.single or not _channels_last(call.layer):
    return None, "several inputs or channels_first data"
  if call.x_ids is None:
    return None, None
  shape = call.ins[0].shape
  spatial = shape[1:-1]
  if any(d is None for d in spatial):
    return None, f"its input shape {shape} is not fully known"
  return np.tile(call.x_ids, int(np.prod(spatial, dtype=np.int64))), None


def _concatenate(call: Call):
  rank = call.outs[0].shape.rank
  if len(call.outs) != 1 or rank is None or call.layer.axis not in (-1, rank - 1):
    return None, f"it concatenates along axis {call.layer.axis}, not channels"
  parts = []
  for t, ids in zip(call.ins, call.in_ids):
    if ids is None:
      w = _width(t)
      if w is None:
        return None, f"input {t.name} has an unknown channel count"
      ids = np.zeros(w, np.int64)  # Channels no pruned layer makes: fixed.
    parts.append(ids)
  return np.concatenate(parts), None


def _join(call: Call):
  widths = {_width(t) for t in call.ins}
  if len(call.outs) != 1 or len(widths) != 1 or None in widths:
    return None, ("it joins tensors of different or unknown channel counts "
                  f"{sorted(map(str, widths))}")
  first = next(i for i in call.in_ids if i is not None)
  for ids in call.in_ids:
    if ids is None:
      call.graph.fix(first, f"'{call.name}' ({type(call.layer).__name__}) joins "
                     "them with a tensor no pruned layer produces (e.g. a "
                     "model input)")
    elif ids is not first:
      call.graph.tie(first, ids)
  call.graph.record_join(call.name,
                         [i for i in call.in_ids if i is not None])
  return first, None


def _unsupported(call: Call):
  return None, _blocker_reason(call.layer)


def _table(*rules: Tuple[Tuple[type, ...], Rule]) -> Dict[type, Rule]:
  return {kind: rule for kinds, rule in rules for kind in kinds}


# Exact layer type -> rule. These layers matter whether or not prunable
# channels reach them (their own inputs are registered for the rebuild).
RULES = _table((PRODUCER_TYPES, _producer), (DEPTHWISE, _depthwise),
                ((_L.BatchNormalization,), _batchnorm), ((_L.PReLU,), _prelu),
                ((_L.Reshape,), _reshape))
# Rules for layers that prunable channels reach; any other type blocks them.
FLOWING_RULES = _table((_PASSTHROUGH + _ELEMENTWISE, _channelwise),
                        ((_L.Flatten,), _flatten),
                        ((_L.Concatenate,), _concatenate), (_JOIN, _join))


def rule_for(layer, channels_flow_in: bool) -> Optional[Rule]:
  """The rule of ``layer``'s exact type; None if it plays no part here."""
  rule = RULES.get(type(layer))
  if rule is None and channels_flow_in:
    rule = FLOWING_RULES.get(type(layer), _unsupported)
  return rule
