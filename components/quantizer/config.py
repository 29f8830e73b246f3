"""The Quantizer's parameters: one frozen, self-validating config.

Built both by the component's constructor (bad values fail when the pipeline is
defined) and by the executor (runtime parameters), so the rules live here once.

Example:

    config = QuantizerConfig(quantization="int8", label_key="label")
    config.require_examples(has_examples=True)
"""

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional

from tfx_compression.components.common import checks
from tfx_compression.components.common import distribute

MODES = ("dynamic", "float16", "int8", "int16x8", "qat")
# Modes that need the pipeline's Examples: calibration data and/or fine-tuning.
DATA_MODES = ("int8", "int16x8", "qat")
# Modes whose TFLite inputs and outputs may be integers.
INTEGER_IO_MODES = ("int8", "qat")
IO_TYPES = ("float32", "int8", "uint8")

_MODE_HELP = {
    "dynamic": "int8 weights, float activations; needs no data",
    "float16": "float16 weights; needs no data",
    "int8": "full integer, calibrated on representative examples",
    "int16x8": "int16 activations with int8 weights, calibrated",
    "qat": "quantization-aware fine-tuning, then full integer",
}


def _mode_list() -> str:
  return "; ".join(f"'{m}' ({_MODE_HELP[m]})" for m in MODES)


def _int(value: Any, name: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f"`{name}` must be an integer >= {minimum}, got "
                    f"{type(value).__name__} {value!r}.")
  if value < minimum:
    raise ValueError(f"`{name}`={value} must be >= {minimum}.")
  return value


@dataclasses.dataclass(frozen=True)
class QuantizerConfig:
  """Self-validating Quantizer parameters.

  Attributes:
    quantization: one of ``MODES``.
    label_key: the label's name in the raw Examples (required for 'qat').
    num_representative_samples: examples drawn (seeded) from ``train_split``
      to calibrate 'int8', 'int16x8' and 'qat'; ignored by the other modes.
    int8_io_type: dtype of the TFLite model's inputs and outputs for 'int8'
      and 'qat': 'float32' (quantize inside the model) or 'int8'/'uint8'.
    qat_steps: fine-tuning steps of 'qat'.
    batch_size: fine-tuning batch size of 'qat'.
    learning_rate: Adam learning rate of 'qat'.
    seed: seeds the sampling of representative examples and the fine-tuning.
    allow_select_ops: 1 lets the converter use TensorFlow ops (Flex) when an
      op is not a TFLite builtin; the device's runtime must then link the
      Flex delegate.
    pack_inputs: 1 feeds the TFLite model one [1, width] tensor instead of one
      input per feature, when every input goes into one Concatenate (the
      usual TFX Keras model): no QUANTIZE op per feature in a full-integer
      model. ``tflite_io.json`` records the packing order.
    train_split: the Examples split used for calibration and fine-tuning.
    module_file: optional Python file defining ``custom_objects`` for models
      with custom layers.
    distillation_weight: w in [0, 1] ('qat' only): fine-tune on (1 - w) *
      task loss + w * T^2 * KL(teacher || student), the teacher being the
      input model, frozen (common/distillation.py). 0 (default) is plain QAT,
      bit for bit.
    distillation_temperature: T in (0, 100], the softening temperature of
      both models' outputs in the KL term.
    distribution: the ``tf.distribute`` strategy of 'qat''s fine-tuning:
      'auto' (several workers in TF_CONFIG, else several GPUs, else one
      device), 'mirrored', 'multi_worker' or 'off' (common/distribute.py).

  Raises on construction:
    TypeError: a parameter has the wrong type.
    ValueError: a value out of range, an unknown mode, or parameters that
      contradict each other.
  """
  quantization: str = "dynamic"
  label_key: Optional[str] = None
  num_representative_samples: int = 200
  int8_io_type: str = "float32"
  qat_steps: int = 200
  batch_size: int = 32
  learning_rate: float = 1e-4
  seed: int = 0
  allow_select_ops: int = 0
  pack_inputs: int = 0
  train_split: str = "train"
  module_file: Optional[str] = None
  distillation_weight: float = 0.0
  distillation_temperature: float = 2.0
  distribution: str = distribute.AUTO

  def __post_init__(self):
    mode = self.quantization
    if not isinstance(mode, str):
      raise TypeError(f"`quantization` must be a string, got "
                      f"{type(mode).__name__} {mode!r}. Use one of: "
                      f"{_mode_list()}.")
    mode = mode.strip().lower()
    if mode not in MODES:
      raise ValueError(f"`quantization`={self.quantization!r} is not a mode of "
                       f"the Quantizer. Use one of: {_mode_list()}.")
    object.__setattr__(self, "quantization", mode)

    if self.label_key is not None and (
        not isinstance(self.label_key, str) or not self.label_key.strip()):
      raise TypeError(f"`label_key` must be the label's name in the raw "
                      f"Examples (a non-empty string), got {self.label_key!r}.")
    if mode == "qat" and self.label_key is None:
      raise ValueError("`label_key` is required for quantization='qat' (the "
                       "fine-tuning needs labels), got None. Set it to the "
                       "label's name in the raw Examples, e.g. 'label'.")

    n = _int(self.num_representative_samples, "num_representative_samples", 0)
    if mode in DATA_MODES and n == 0:
      raise ValueError(
          f"`num_representative_samples`=0 but quantization={mode!r} "
          "calibrates its int8 ranges on representative examples. Use a value "
          ">= 1 (100 to 500 is typical), or choose 'dynamic' or 'float16', "
          "which need no data.")

    io = self.int8_io_type
    if not isinstance(io, str):
      raise TypeError(f"`int8_io_type` must be one of {IO_TYPES}, got "
                      f"{type(io).__name__} {io!r}.")
    io = io.strip().lower()
    if io not in IO_TYPES:
      raise ValueError(f"`int8_io_type`={self.int8_io_type!r} is not one of "
                       f"{IO_TYPES}.")
    if io != "float32" and mode not in INTEGER_IO_MODES:
      raise ValueError(
          f"`int8_io_type`={io!r} needs quantization='int8' or 'qat' (full "
          f"integer models), but quantization={mode!r} keeps float inputs and "
          "outputs. Leave int8_io_type='float32' or change the mode.")
    object.__setattr__(self, "int8_io_type", io)

    _int(self.qat_steps, "qat_steps", 1)
    _int(self.batch_size, "batch_size", 1)
    _int(self.seed, "seed", 0)
    lr = self.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
      raise TypeError(f"`learning_rate` must be a number, got "
                      f"{type(lr).__name__} {lr!r}.")
    if not math.isfinite(lr) or lr <= 0:
      raise ValueError(f"`learning_rate`={lr!r} must be a finite number > 0 "
                       "(1e-4 to 1e-5 suits fine-tuning).")
    object.__setattr__(self, "learning_rate", float(lr))

    for name in ("allow_select_ops", "pack_inputs"):
      flag = getattr(self, name)
      if isinstance(flag, bool):
        flag = int(flag)
      if not isinstance(flag, int):
        raise TypeError(f"`{name}` must be 0 or 1, got "
                        f"{type(flag).__name__} {flag!r}.")
      if flag not in (0, 1):
        raise ValueError(f"`{name}`={flag} must be 0 or 1.")
      object.__setattr__(self, name, flag)

    if not isinstance(self.train_split, str) or not self.train_split:
      raise TypeError(f"`train_split` must name a split of the Examples, got "
                      f"{self.train_split!r}.")
    if self.module_file is not None and (
        not isinstance(self.module_file, str) or not self.module_file):
      raise TypeError(f"`module_file` must be a path to a Python file, got "
                      f"{self.module_file!r}.")
    self._validate_distillation(mode)
    object.__setattr__(self, "distribution",
                       distribute.check_distribution(self.distribution))

  def _validate_distillation(self, mode: str) -> None:
    # The Pruner's rules and wording (common/checks.py), then the mode.
    checks.check_distillation(self.distillation_weight,
                              self.distillation_temperature)
    w = float(self.distillation_weight)
    object.__setattr__(self, "distillation_weight", w)
    object.__setattr__(self, "distillation_temperature",
                       float(self.distillation_temperature))
    if w > 0 and mode != "qat":
      raise ValueError(
          f"`distillation_weight`={w!r} needs quantization='qat', the only "
          f"mode that fine-tunes; quantization={mode!r} trains nothing. Set "
          "distillation_weight=0, or use quantization='qat'.")

  @property
  def distills(self) -> bool:
    """True when QAT distills from the input model."""
    return self.distillation_weight > 0

  @property
  def needs_examples(self) -> bool:
    return self.quantization in DATA_MODES

  def require_examples(self, has_examples: bool,
                       has_feature_spec: bool = True) -> None:
    """Fails clearly when the mode needs Examples that were not wired.

    Args:
      has_examples: an Examples channel or artifact is present.
      has_feature_spec: a Schema or a TransformGraph is present (needed to
        parse the Examples).

    Raises:
      ValueError: naming the missing input and what to do.
    """
    if not self.needs_examples:
      return
    if not has_examples:
      raise ValueError(
          f"quantization={self.quantization!r} needs representative data, but "
          "`examples` is not set. Wire the pipeline's Examples to `examples` "
          "(ExampleGen's or Transform's output), or choose 'dynamic' or "
          "'float16', which need no data.")
    if not has_feature_spec:
      raise ValueError(
          f"quantization={self.quantization!r} reads `examples`, which needs "
          "their `schema` (SchemaGen's output) or a `transform_graph` to parse "
          "them; neither is set. Wire `schema`.")

  @classmethod
  def from_parameters(cls, properties: Mapping[str, Any]) -> "QuantizerConfig":
    """Builds from component parameters, skipping unset (None) ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in properties.items()
                  if k in names and v is not None})

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)
