"""What each kind of layer does to the channels flowing into it: the rules of channel analysis.

One rule per layer kind, for both Kerases: a backend's access module
(``keras2_channel_access`` for tf_keras, ``keras3_channel_access`` for Keras 3) maps
its exact layer types to the kinds below and answers the few questions that differ
between the two (tensor shapes, whether a function maps 0 to 0, why a layer blocks).
Two tables: ``RULES`` for kinds that matter whether or not prunable channels reach
them (producers, BatchNormalization, DepthwiseConv, PReLU, Reshape: their inputs are
registered for the rebuild) and ``FLOWING_RULES`` for kinds that only matter when
prunable channels reach them (pass-through and element-wise layers, element-wise
operations with a constant, Flatten, Concatenate, the joins). Any other layer that
prunable channels reach blocks them. A rule takes a :class:`Call` and returns
(channel ids of the output or None, why the rebuild cannot follow the channels
through the layer or None); :func:`channel_graph.analyze` applies them.

Removed channels are zero where they flow, except after something that does not map
0 to 0 (a sigmoid, ``x + 3``): there a rule marks the output *not zero*
(``Call.out_not_zero``, with the reason) and such channels may only go on through
element-wise layers to a **gating** ``Multiply``, whose other side carries the same
channels as zeros. ``x * gate(x)`` is zero where ``x`` is, whatever the gate says, so
a squeeze-and-excitation block (pooling -> reduce -> expand -> sigmoid -> Multiply)
or a hard-swish (``x * relu6(x + 3) / 6``) loses the channel together with the
gate's expand unit. Anywhere else the channels stay, for that reason.

Example:

    rule = rule_for("conv", channels_flow_in=True)
    out_ids, blocked = rule(Call(graph, access, layer, "conv", ins, outs, in_ids))
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

# The kinds a backend's access module maps its layer types to.
PRODUCER_KINDS = ("dense", "conv", "separable")
# Kinds whose not-zero channels go on (they stay not zero); any other kind fixes them.
NOT_ZERO_PASSES = ("passthrough", "elementwise", "rescaling", "scalar_op",
                   "reshape", "join", "multiply")


# Keras layer class name -> kind, the same for both Kerases; each backend's access
# looks the names up in its own ``layers`` module (exact types: Conv1DTranspose
# subclasses Conv1D, DepthwiseConv2D subclasses Conv, and a user's subclass of
# Dense may do anything in call()).
KIND_OF_CLASS: Dict[str, str] = {
    **{n: "conv" for n in ("Conv1D", "Conv2D", "Conv3D")},
    **{n: "separable" for n in ("SeparableConv1D", "SeparableConv2D")},
    **{n: "depthwise" for n in ("DepthwiseConv1D", "DepthwiseConv2D")},
    **{n: "transposed" for n in ("Conv1DTranspose", "Conv2DTranspose",
                                 "Conv3DTranspose")},
    # Channel-wise layers without weights that map 0 to 0 (channels_last data).
    **{n: "passthrough" for n in (
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianNoise", "GaussianDropout", "ActivityRegularization",
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
        "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
        "UpSampling3D", "RepeatVector", "Identity")},
    # Element-wise: followed if they act channel by channel (checked numerically).
    **{n: "elementwise" for n in ("Activation", "ReLU", "LeakyReLU", "ELU",
                                  "ThresholdedReLU", "Softmax")},
    **{n: "join" for n in ("Add", "Subtract", "Average", "Maximum", "Minimum")},
    "Dense": "dense", "BatchNormalization": "batchnorm", "PReLU": "prelu",
    "Reshape": "reshape", "Rescaling": "rescaling", "Flatten": "flatten",
    "Concatenate": "concatenate", "Multiply": "multiply",
}


class LayerKinds:
  """The kind of a layer of one Keras (base of the backends' access objects).

  Args:
    layers: that Keras' ``layers`` module.
  """

  def __init__(self, layers):
    self.kinds: Dict[type, str] = {
        getattr(layers, n): k for n, k in KIND_OF_CLASS.items()
        if hasattr(layers, n)}
    self._transposed = tuple(t for t, k in self.kinds.items()
                             if k == "transposed")
    self._mac_types = tuple(t for t, k in self.kinds.items()
                            if k in ("dense", "conv", "separable", "depthwise"))

  def kind(self, layer) -> Optional[str]:
    """The kind of ``layer``'s exact type; None: plays no part, or blocks."""
    kind = self.kinds.get(type(layer))
    if kind is None and self.is_operation(layer):
      return "scalar_op"
    return kind

  def is_operation(self, layer) -> bool:
    """A TF / Keras operation node that ``scalar_op`` may follow."""
    raise NotImplementedError

  def mac_kind(self, layer) -> Optional[str]:
    """'transposed', 'conv' (any Dense/Conv/Depthwise, subclasses too) or None."""
    if isinstance(layer, self._transposed):
      return "transposed"
    return "conv" if isinstance(layer, self._mac_types) else None


def width(shape: Optional[tuple]) -> Optional[int]:
  """The channel count (last axis) of a shape; None if unknown."""
  if not shape:
    return None
  return shape[-1]


@dataclasses.dataclass
class Call:
  """One call of a layer in the graph, as the per-kind rules see it."""
  graph: Any                          # the channel_graph.ChannelGraph
  access: Any                         # the backend's access object
  layer: Any
  kind: str
  ins: list
  outs: list
  in_ids: List[Optional[np.ndarray]]  # channel ids of each input (None: none)
  candidate: bool = False             # the layer is selected for pruning
  output_name: Optional[str] = None   # the model output its first output is
  not_zero: List[Optional[str]] = dataclasses.field(default_factory=list)
  args: tuple = ()                    # the call's arguments (tensors and constants)
  kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # Set by a rule: why the output's removed channels are not zero (None: they are).
  out_not_zero: Optional[str] = None

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
  def x_not_zero(self) -> Optional[str]:
    return self.not_zero[0] if self.not_zero else None

  def shape(self, tensor) -> Optional[tuple]:
    return self.access.shape(tensor)

  def width(self, tensor) -> Optional[int]:
    return width(self.access.shape(tensor))

  @property
  def x_width(self) -> Optional[int]:
    return self.width(self.ins[0]) if self.ins else None

  def register(self, kind: str) -> None:
    """Records a layer whose weights or config follow the channels coming in."""
    self.graph.kinds[self.name] = kind
    self.graph.register_input(self.name, self.x_ids)


# A rule: Call -> (channel ids of the output or None, why the rebuild cannot
# follow the channels through this layer or None).
Rule = Callable[[Call], Tuple[Optional[np.ndarray], Optional[str]]]


def _channels_last(layer) -> bool:
  return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _not_zero_reason(call: Call) -> str:
  """Why channels after this layer are not zero where removed (a fixed text)."""
  return (f"they feed {type(call.layer).__name__} layer '{call.name}', which "
          "the rebuild cannot follow (it does not map 0 to 0 channel by "
          "channel)")


def elementwise_zero(access, fn) -> Tuple[bool, bool]:
  """(``fn`` acts element by element, ``fn`` maps 0 to 0), checked numerically.

  Softmax is not element-wise: a removed channel changes the others.
  """
  x = np.array([[-1.5, 0.0, 2.0]], np.float32)
  row, col = access.evaluate(fn, x), access.evaluate(fn, x.reshape(3, 1))
  if row is None or col is None:
    return False, False
  row, col = np.asarray(row).reshape(-1), np.asarray(col).reshape(-1)
  elementwise = row.shape == col.shape and bool(np.allclose(row, col))
  return elementwise, bool(row[1] == 0)


def _activation_problem(call: Call) -> Tuple[bool, Optional[str]]:
  """(removed channels can go on, why they are not zero) for a Dense/Conv."""
  act = getattr(call.layer, "activation", None)
  if act is None:
    return True, None
  elementwise, zero = elementwise_zero(call.access, act)
  if zero and elementwise:
    return True, None
  name = getattr(act, "__name__", str(act))
  return elementwise, (f"its activation {name!r} does not map 0 to 0, so a "
                       "removed channel would not be zero")


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
      if call.output_name is not None:
        graph.skipped[name] = f"it produces the model output '{call.output_name}'"
      else:
        # Element-wise but not 0 -> 0 (a gate's sigmoid): its units may go with
        # the channels it gates; otherwise (softmax) they stay.
        passes, problem = _activation_problem(call)
        if not passes:
          graph.skipped[name] = problem
          return None, None
        if name not in graph.producers:
          graph.add_producer(
              name, layer.units if call.kind == "dense" else layer.filters,
              "pointwise_kernel" if call.kind == "separable" else "kernel")
        out_ids = graph.producers[name].ids
        call.out_not_zero = problem
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
  shape = call.shape(call.ins[0]) if call.ins else None
  rank = None if shape is None else len(shape)
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
                                 or call.width(call.outs[0]) != call.x_width):
    return None, ("it reshapes the channel axis (a Reshape that hard-codes the "
                  "channel count)")
  call.register("reshape")
  call.out_not_zero = call.x_not_zero
  return call.x_ids, None


def _channelwise(call: Call):
  layer = call.layer
  if not call.single or not _channels_last(layer):
    return None, "several inputs or channels_first data"
  if call.x_width is not None and call.width(call.outs[0]) != call.x_width:
    return None, "it changes the channel axis"
  call.out_not_zero = call.x_not_zero
  if call.kind in ("elementwise", "rescaling"):
    elementwise, zero = elementwise_zero(call.access, layer)
    if not elementwise or (call.kind == "rescaling" and (
        np.ndim(layer.scale) or np.ndim(layer.offset))):
      return None, "it does not map 0 to 0 channel by channel"
    if not zero:
      call.out_not_zero = call.out_not_zero or _not_zero_reason(call)
  return call.x_ids, None


def _scalar_op(call: Call):
  """An element-wise operation with a constant (``x + 3.0``, ``x * (1 / 6)``)."""
  zero_to_zero = call.access.scalar_op(call.layer, call.args, call.kwargs)
  if zero_to_zero is None or not call.single:
    return None, call.access.blocker_reason(call.layer)
  if call.x_width is not None and call.width(call.outs[0]) != call.x_width:
    return None, "it changes the channel axis"
  call.out_not_zero = call.x_not_zero
  if not zero_to_zero:
    call.out_not_zero = call.out_not_zero or _not_zero_reason(call)
  return call.x_ids, None


def _flatten(call: Call):
  if not call.single or not _channels_last(call.layer):
    return None, "several inputs or channels_first data"
  if call.x_ids is None:
    return None, None
  shape = call.shape(call.ins[0])
  spatial = shape[1:-1]
  if any(d is None for d in spatial):
    return None, f"its input shape {call.ins[0].shape} is not fully known"
  return np.tile(call.x_ids, int(np.prod(spatial, dtype=np.int64))), None


def _concatenate(call: Call):
  shape = call.shape(call.outs[0])
  rank = None if shape is None else len(shape)
  if len(call.outs) != 1 or rank is None or call.layer.axis not in (-1, rank - 1):
    return None, f"it concatenates along axis {call.layer.axis}, not channels"
  parts = []
  for t, ids in zip(call.ins, call.in_ids):
    if ids is None:
      w = call.width(t)
      if w is None:
        return None, f"input {t.name} has an unknown channel count"
      ids = np.zeros(w, np.int64)  # Channels no pruned layer makes: fixed.
    parts.append(ids)
  return np.concatenate(parts), None


def _join(call: Call):
  """Add, Subtract, Multiply, ...: the joined tensors lose the same channels."""
  widths = {call.width(t) for t in call.ins}
  if len(call.outs) != 1 or len(widths) != 1 or None in widths:
    counts = sorted(map(str, widths))
    if call.kind == "multiply":
      return None, (f"it multiplies tensors of different or unknown channel "
                    f"counts {counts}: only a gate with one value per channel "
                    "(squeeze-and-excitation) can lose channels with the "
                    "tensor it gates")
    return None, ("it joins tensors of different or unknown channel counts "
                  f"{counts}")
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
  flowing = [(ids, nz) for ids, nz in zip(call.in_ids, call.not_zero)
             if ids is not None]
  if call.kind == "multiply" and any(nz is None for _, nz in flowing):
    # A gating join: one factor is zero where channels are removed, so is the
    # product, whatever the gate (not zero there) says.
    call.out_not_zero = None
  else:
    call.out_not_zero = next((nz for _, nz in flowing if nz), None)
  return first, None


def _unsupported(call: Call):
  return None, call.access.blocker_reason(call.layer)


def _table(*rules: Tuple[Tuple[str, ...], Rule]) -> Dict[str, Rule]:
  return {kind: rule for kinds, rule in rules for kind in kinds}


# Kind -> rule. These layers matter whether or not prunable channels reach them
# (their own inputs are registered for the rebuild).
RULES = _table((PRODUCER_KINDS, _producer), (("depthwise",), _depthwise),
               (("batchnorm",), _batchnorm), (("prelu",), _prelu),
               (("reshape",), _reshape))
# Rules for layers that prunable channels reach; any other kind blocks them.
FLOWING_RULES = _table(
    (("passthrough", "elementwise", "rescaling"), _channelwise),
    (("scalar_op",), _scalar_op), (("flatten",), _flatten),
    (("concatenate",), _concatenate), (("join", "multiply"), _join))


def rule_for(kind: Optional[str], channels_flow_in: bool) -> Optional[Rule]:
  """The rule of a layer ``kind``; None if it plays no part here."""
  rule = RULES.get(kind)
  if rule is None and channels_flow_in:
    rule = FLOWING_RULES.get(kind, _unsupported)
  return rule
