"""The CompressionPlanner's parameters: one frozen, self-validating config.

Built in the component's constructor (bad values fail when the pipeline is
defined) and again in the executor from ``exec_properties`` (runtime
parameters), so the rules live here only. The Pruner's and the Quantizer's own
configs check what is theirs (a structure, a mode): a plan is made of their
steps, so the same values are refused with the same words.

Example:

    config = PlannerConfig(label_key="label", max_drop=0.005,
                           structures="channels,unstructured",
                           quantization_modes="int8,float16")
    config.pruner_config("channels").search_sparsities   # (0.5, 0.6, ...)
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from tfx_compression.components.common import checks
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.pruner import config as pruner_config_lib
from tfx_compression.components.quantizer import config as quantizer_config_lib

CHANNELS = pruner_config_lib.CHANNELS
UNSTRUCTURED = pruner_config_lib.UNSTRUCTURED
# Channels pruning, then unstructured pruning of the narrow model.
CHANNELS_THEN_UNSTRUCTURED = "channels+unstructured"
# Quantization alone: the input model converted in each mode.
NO_PRUNING = "none"
NO_QUANTIZATION = "none"
QUANTIZATION_MODES = ("int8", "float16", "dynamic", NO_QUANTIZATION)
OBJECTIVES = ("size", "gzip_size", "latency")

DEFAULT_STRUCTURES = (CHANNELS, CHANNELS_THEN_UNSTRUCTURED, UNSTRUCTURED, "2:4")
# Five steps: each costs one fine-tuning (the search's cost is their sum).
DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.85, 0.9)
DEFAULT_MODES = ("int8", "float16", "dynamic", NO_QUANTIZATION)

_STRUCTURES_HELP = ("'channels', 'unstructured', an M:N block such as '2:4', or "
                    "'channels+unstructured' (channels, then unstructured "
                    "pruning of the narrow model)")


def _items(value: Union[str, Sequence[Any], None], parameter: str) -> Tuple:
  """A comma-separated string or a list -> tuple of stripped items."""
  if value is None:
    return ()
  if isinstance(value, str):
    return tuple(v.strip() for v in value.split(",") if v.strip())
  if isinstance(value, (list, tuple)):
    return tuple(v.strip() if isinstance(v, str) else v for v in value)
  raise TypeError(f"`{parameter}` must be a comma-separated string or a list, "
                  f"got {type(value).__name__} {value!r}.")


def structure_order(structure: str) -> int:
  """Channels first: it shrinks raw bytes and latency, so it usually wins and
  its result bounds the others (see planning.py)."""
  if structure == CHANNELS:
    return 0
  if structure == CHANNELS_THEN_UNSTRUCTURED:
    return 1
  if pruner_config_lib.parse_m_by_n(structure):
    return 2
  return 3


def parse_structures(value) -> Tuple[str, ...]:
  """The structures to climb, validated and ordered (channels first)."""
  out = []
  for item in _items(value, "structures"):
    if not isinstance(item, str):
      raise TypeError(f"`structures` items must be strings, got "
                      f"{type(item).__name__} {item!r}.")
    s = item.lower().replace(" ", "")
    if s != CHANNELS_THEN_UNSTRUCTURED:
      try:
        s = pruner_config_lib.PrunerConfig(sparsity_structure=s
                                           ).sparsity_structure
      except ValueError:
        raise ValueError(
            f"`structures`={value!r}: {item!r} is not a structure. Use "
            f"{_STRUCTURES_HELP}, comma-separated.") from None
    if s not in out:
      out.append(s)
  if not out and value not in (None, ""):
    raise ValueError(f"`structures`={value!r} lists no structure. Use "
                     f"{_STRUCTURES_HELP}, comma-separated.")
  return tuple(sorted(out, key=structure_order))


def parse_modes(value) -> Tuple[str, ...]:
  """The quantization modes each passing model is converted in."""
  out = []
  for item in _items(value, "quantization_modes"):
    if not isinstance(item, str):
      raise TypeError(f"`quantization_modes` items must be strings, got "
                      f"{type(item).__name__} {item!r}.")
    mode = item.lower()
    if mode not in QUANTIZATION_MODES:
      raise ValueError(
          f"`quantization_modes`={value!r}: {item!r} is not a mode the "
          f"planner tries. Use a comma-separated subset of "
          f"{', '.join(QUANTIZATION_MODES)} ('none' keeps the pruned "
          "SavedModel unquantized).")
    if mode not in out:
      out.append(mode)
  if not out:
    raise ValueError(f"`quantization_modes`={value!r} lists no mode. Use a "
                     f"subset of {', '.join(QUANTIZATION_MODES)}, e.g. "
                     "'int8,float16'.")
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
  """Everything the CompressionPlanner needs besides the model and the data.

  Attributes:
    label_key: the label's feature name in the raw Examples (required unless
      ``module_file`` defines ``input_fn``).
    structures: pruning structures to climb (channels first whatever the
      order given): 'channels', 'unstructured', 'M:N', 'channels+unstructured'.
      Empty: quantization of the input model only.
    sparsities: the rising sparsities each structure climbs, step by step,
      each step continuing from the previous one's weights; a structure stops
      at its first step that fails the gate.
    search_steps: fine-tuning steps per step ('channels' adds
      ``finetune_steps`` after each rebuild).
    finetune_steps: fine-tuning after each channel removal.
    quantization_modes: the modes every passing model is converted in
      ('none': the pruned SavedModel itself).
    pack_inputs: 1 feeds TFLite models one packed input where the model
      allows it (every input into one Concatenate), else named inputs.
    num_representative_samples: train examples calibrating 'int8'.
    objective: 'size' (raw bytes), 'gzip_size' or 'latency' (median
      single-thread seconds per example); ties go to the better metric.
    latency_samples: eval examples timed per candidate (after warm-up).
    metric, max_drop, max_relative_drop, min_value: the gate every candidate
      must pass, with the CompressionEvaluator's rules (``GateThresholds``).
    include_layers, exclude_layers, channel_ranking, channel_norm,
    batch_size, learning_rate, distillation_weight, distillation_temperature,
    seed, train_split, eval_split, module_file: as the Pruner's. With
      ``distillation_weight`` > 0 every step of every structure fine-tunes
      towards the input model (one frozen teacher for the whole plan).
  """
  label_key: Optional[str] = None
  structures: Tuple[str, ...] = DEFAULT_STRUCTURES
  sparsities: Tuple[float, ...] = DEFAULT_SPARSITIES
  search_steps: int = 150
  finetune_steps: int = 100
  quantization_modes: Tuple[str, ...] = DEFAULT_MODES
  pack_inputs: int = 1
  num_representative_samples: int = 200
  objective: str = "size"
  latency_samples: int = 100
  metric: str = "accuracy"
  max_drop: Optional[float] = None
  max_relative_drop: Optional[float] = None
  min_value: Optional[float] = None
  include_layers: Tuple[str, ...] = ()
  exclude_layers: Tuple[str, ...] = ()
  channel_ranking: str = "per_layer"
  channel_norm: str = "l1"
  batch_size: int = 32
  learning_rate: float = 1e-3
  distillation_weight: float = 0.0
  distillation_temperature: float = 2.0
  seed: int = 0
  train_split: str = "train"
  eval_split: str = "eval"
  module_file: Optional[str] = None

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen dataclass
    set_("structures", parse_structures(self.structures))
    set_("quantization_modes", parse_modes(self.quantization_modes))
    for name in ("search_steps", "finetune_steps", "pack_inputs",
                 "num_representative_samples", "latency_samples",
                 "batch_size", "seed"):
      checks.check_int(name, getattr(self, name))
    checks.check_str("objective", self.objective)
    checks.check_str("eval_split", self.eval_split)
    objective = self.objective.strip().lower()
    if objective not in OBJECTIVES:
      raise ValueError(
          f"`objective`={self.objective!r} is not one of {OBJECTIVES}: 'size' "
          "picks the fewest raw bytes, 'gzip_size' the fewest gzip bytes, "
          "'latency' the fastest single-thread example.")
    set_("objective", objective)
    if self.pack_inputs not in (0, 1):
      raise ValueError(f"`pack_inputs`={self.pack_inputs} must be 0 or 1.")
    if self.search_steps < 1:
      raise ValueError(f"`search_steps`={self.search_steps} must be >= 1 "
                       "(fine-tuning steps per sparsity step), e.g. 150.")
    if objective == "latency" and self.latency_samples < 1:
      raise ValueError(
          f"`latency_samples`={self.latency_samples} but objective='latency' "
          "needs the latency measured: use latency_samples >= 1 (e.g. 100).")
    if self.latency_samples < 0:
      raise ValueError(f"`latency_samples`={self.latency_samples} must be "
                       ">= 0 (0: latency not measured).")
    if not self.eval_split:
      raise ValueError("`eval_split` is empty: every candidate is measured on "
                       "it with the gate's metric; name it, e.g. 'eval'.")
    if "int8" in self.quantization_modes and self.num_representative_samples < 1:
      raise ValueError(
          f"`num_representative_samples`={self.num_representative_samples} "
          "but 'int8' is in `quantization_modes` and calibrates on "
          "representative examples: use >= 1 (e.g. 200), or drop 'int8'.")
    # Structures' and modes' own rules, in their own words; the gate too.
    self.gate()
    if self.structures:
      set_("sparsities", self.pruner_config(self.structures[0]
                                            ).search_sparsities)
      for structure in self.structures:
        self.pruner_config(structure)
    else:
      set_("sparsities", pruner_config_lib.parse_sparsities(self.sparsities))
    for mode in self.tflite_modes:
      self.quantizer_config(mode)

  @property
  def tflite_modes(self) -> Tuple[str, ...]:
    return tuple(m for m in self.quantization_modes if m != NO_QUANTIZATION)

  def gate(self) -> thresholds_lib.GateThresholds:
    """The thresholds every candidate must pass (the evaluator's rules)."""
    return thresholds_lib.GateThresholds(
        metric=self.metric, max_drop=self.max_drop,
        max_relative_drop=self.max_relative_drop, min_value=self.min_value)

  def pruner_config(self, structure: str) -> pruner_config_lib.PrunerConfig:
    """The Pruner's config of one climb ('channels+unstructured': its second
    part, 'unstructured' on the narrow model)."""
    if structure == CHANNELS_THEN_UNSTRUCTURED or structure == NO_PRUNING:
      structure = UNSTRUCTURED
    return pruner_config_lib.PrunerConfig(
        label_key=self.label_key, sparsity_structure=structure,
        search_sparsities=self.sparsities, search_steps=self.search_steps,
        finetune_steps=self.finetune_steps, metric=self.metric,
        max_drop=self.max_drop, max_relative_drop=self.max_relative_drop,
        min_value=self.min_value, include_layers=self.include_layers,
        exclude_layers=self.exclude_layers,
        channel_ranking=self.channel_ranking, channel_norm=self.channel_norm,
        batch_size=self.batch_size, learning_rate=self.learning_rate,
        distillation_weight=self.distillation_weight,
        distillation_temperature=self.distillation_temperature,
        seed=self.seed, train_split=self.train_split,
        eval_split=self.eval_split, module_file=self.module_file)

  def quantizer_config(self, mode: str
                       ) -> quantizer_config_lib.QuantizerConfig:
    """The Quantizer's config of one conversion (packing is tried per model)."""
    return quantizer_config_lib.QuantizerConfig(
        quantization=mode, label_key=self.label_key,
        num_representative_samples=self.num_representative_samples,
        seed=self.seed, train_split=self.train_split,
        module_file=self.module_file)

  def check_data_inputs(self, has_schema: bool, has_transform: bool) -> None:
    """As the Pruner's: the Examples must be decodable (component, executor)."""
    self.pruner_config(UNSTRUCTURED).check_data_inputs(has_schema,
                                                       has_transform)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_parameters(cls, params: Mapping[str, Any]) -> "PlannerConfig":
    """Builds from component parameters; None means the default."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in params.items()
                  if k in names and v is not None})
