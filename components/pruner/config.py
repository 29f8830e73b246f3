"""The Pruner's parameters: one frozen, self-validating config.

Built in the component's constructor (bad values fail when the pipeline is
defined) and again in the executor from ``exec_properties`` (runtime parameters),
so the rules live here only.

Example:

    config = PrunerConfig(label_key="label", target_sparsity=0.8,
                          sparsity_structure="2:4", train_steps=300)
    begin, end, frequency = config.schedule_steps(config.total_steps())
"""

import dataclasses
import math
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from tfx_compression.components.common import checks
from tfx_compression.components.common import distribute
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner.schedules import resolve_schedule

UNSTRUCTURED = "unstructured"
CHANNELS = "channels"
CHANNEL_RANKINGS = ("per_layer", "global")
CHANNEL_NORMS = ("l1", "l2")

_M_BY_N = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_STRUCTURES_HELP = ("'unstructured', 'channels', or an M:N block such as '2:4' "
                    "(at least M zeros in every N consecutive weights)")


def parse_m_by_n(structure: str) -> Optional[Tuple[int, int]]:
  """(M, N) of an 'M:N' structure string, or None for another structure."""
  match = _M_BY_N.match(structure)
  if not match:
    return None
  return int(match.group(1)), int(match.group(2))


def split_patterns(value: Union[str, Sequence[str], None],
                   parameter: str) -> Tuple[str, ...]:
  """Comma-separated string or list of layer-name patterns -> tuple."""
  if value is None:
    return ()
  if isinstance(value, str):
    items = value.split(",")
  elif isinstance(value, (list, tuple)):
    items = list(value)
    for item in items:
      if not isinstance(item, str):
        raise TypeError(
            f"`{parameter}` must be a comma-separated string or a list of "
            f"strings, got an item {item!r} of type {type(item).__name__}.")
  else:
    raise TypeError(f"`{parameter}` must be a comma-separated string or a list "
                    f"of strings, got {type(value).__name__} {value!r}.")
  return tuple(p.strip() for p in items if p.strip())


def parse_sparsities(value: Union[str, Sequence[float], None]) -> Tuple[float, ...]:
  """'0.5,0.6,0.7' or a list -> strictly increasing sparsities in (0, 1)."""
  if value is None or value == "" or value == ():
    return ()
  items = value.split(",") if isinstance(value, str) else list(value)
  out = []
  for item in items:
    if isinstance(item, str):
      item = item.strip()
      if not item:
        continue
      try:
        item = float(item)
      except ValueError:
        raise ValueError(
            f"`search_sparsities`={value!r}: {item!r} is not a number. Give "
            "comma-separated sparsities such as '0.5,0.6,0.7,0.8'.") from None
    if isinstance(item, bool) or not isinstance(item, (int, float)):
      raise TypeError(f"`search_sparsities` items must be numbers, got "
                      f"{type(item).__name__} {item!r}.")
    if not 0.0 < float(item) < 1.0:
      raise ValueError(
          f"`search_sparsities`={value!r}: {item} is outside (0, 1). Each is a "
          "fraction of weights (or channels) removed, e.g. 0.5.")
    out.append(float(item))
  if any(b <= a for a, b in zip(out, out[1:])):
    raise ValueError(
        f"`search_sparsities`={value!r} must rise strictly (each step prunes "
        "more than the last), e.g. '0.5,0.6,0.7,0.8,0.9'.")
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class PrunerConfig:
  """Everything the Pruner needs besides the model and the data.

  Attributes:
    label_key: the label's feature name in the raw Examples. Required unless
      ``module_file`` defines ``input_fn``.
    target_sparsity: fraction of each pruned kernel set to zero, in [0, 1).
      Ignored for an M:N structure, whose sparsity is M/N.
    initial_sparsity: sparsity at ``begin_step`` (polynomial schedule).
    schedule: 'polynomial' (tfmot PolynomialDecay, ramps from
      ``initial_sparsity`` to ``target_sparsity``) or 'constant'
      (ConstantSparsity: the target from ``begin_step`` on).
    begin_step: fine-tuning steps before the first mask update (0 = at the
      first step).
    end_step: the step of the last mask update, where the target is reached.
      None: ``schedules.RAMP_FRACTION`` of the steps, leaving the rest to
      recover.
    frequency: steps between mask updates. None: the ramp split into about
      ``schedules.MASK_UPDATES`` updates.
    sparsity_structure: 'unstructured', 'channels' or 'M:N' (e.g. '2:4').
    include_layers: fnmatch patterns of layer names to prune (empty: every
      layer tfmot can prune).
    exclude_layers: fnmatch patterns of layer names never to prune.
    channel_ranking: 'per_layer' or 'global' ranking of channels ('channels').
    channel_norm: 'l1' or 'l2' channel importance ('channels').
    finetune_steps: fine-tuning steps after the channels are physically
      removed ('channels'), at a learning rate decaying to zero (cosine).
    train_steps: fine-tuning steps (default
      ``schedules.DEFAULT_TRAIN_STEPS``); exclusive with ``epochs``.
    epochs: passes over the train split instead of ``train_steps``.
    batch_size: examples per step.
    learning_rate: Adam learning rate of the fine-tuning. 1e-3 (Adam's
      default, what the tfmot pruning guide fine-tunes with): pruning to 80%
      in 300 steps needs real recovery; on the demo CNN 1e-4 lost 2.3
      accuracy points where 1e-3 lost none. Lower it for models trained with
      a smaller rate.
    seed: seeds weights' shuffling, the data order and TensorFlow's ops.
    train_split: the Examples split to fine-tune on.
    eval_split: the split the logged validation metric is computed on ('' to
      skip the evaluation).
    module_file: optional Python file defining ``input_fn`` and/or
      ``custom_objects``.
    distillation_weight: w in [0, 1]: fine-tune on (1 - w) * task loss +
      w * T^2 * KL(teacher || student), the teacher being the input model,
      frozen (see ``common/distillation.py``); in the search, every step
      distils from that same input model. 0 (default) is plain
      fine-tuning, bit for bit; off by default because on the demo it has
      not beaten plain fine-tuning (benchmarks/README.md, "Distillation").
    distribution: the ``tf.distribute`` strategy of the fine-tuning: 'auto'
      (several workers in TF_CONFIG: MultiWorkerMirroredStrategy; else several
      GPUs: MirroredStrategy; else one device), 'mirrored', 'multi_worker' or
      'off' (see ``common/distribute.py``).
    distillation_temperature: T > 0, the softening temperature of both
      models' outputs in the KL term.
  """
  label_key: Optional[str] = None
  target_sparsity: float = 0.8
  initial_sparsity: float = 0.0
  schedule: str = "polynomial"
  begin_step: int = 0
  end_step: Optional[int] = None
  frequency: Optional[int] = None
  sparsity_structure: str = UNSTRUCTURED
  include_layers: Tuple[str, ...] = ()
  exclude_layers: Tuple[str, ...] = ()
  channel_ranking: str = "per_layer"
  channel_norm: str = "l1"
  finetune_steps: int = 100
  train_steps: Optional[int] = None
  epochs: Optional[int] = None
  batch_size: int = 32
  learning_rate: float = 1e-3
  seed: int = 0
  train_split: str = "train"
  eval_split: str = "eval"
  module_file: Optional[str] = None
  # Iterative search (components/pruner/search.py): the sparsities to try in
  # order, the fine-tuning steps of each, and the gate each step must pass.
  search_sparsities: Tuple[float, ...] = ()
  search_steps: Optional[int] = None
  metric: str = "accuracy"
  max_drop: Optional[float] = None
  max_relative_drop: Optional[float] = None
  min_value: Optional[float] = None
  distillation_weight: float = 0.0
  distillation_temperature: float = 2.0
  distribution: str = distribute.AUTO

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen dataclass
    set_("include_layers", split_patterns(self.include_layers, "include_layers"))
    set_("exclude_layers", split_patterns(self.exclude_layers, "exclude_layers"))
    self._validate_types()
    set_("target_sparsity", float(self.target_sparsity))
    set_("initial_sparsity", float(self.initial_sparsity))
    set_("learning_rate", float(self.learning_rate))
    set_("distillation_weight", float(self.distillation_weight))
    set_("distillation_temperature", float(self.distillation_temperature))
    set_("schedule", self.schedule.strip().lower())
    set_("sparsity_structure", self.sparsity_structure.strip().lower()
         .replace(" ", ""))
    set_("channel_ranking", self.channel_ranking.strip().lower())
    set_("channel_norm", self.channel_norm.strip().lower())
    self._validate_sparsity()
    self._validate_structure()
    self._validate_steps()
    self._validate_training()
    self._validate_search()
    self._validate_distillation()
    set_("distribution", distribute.check_distribution(self.distribution))

  # Validation, one group of rules per method (a new mode adds its own).

  def _validate_types(self):
    for name in ("target_sparsity", "initial_sparsity", "learning_rate",
                 "distillation_weight", "distillation_temperature"):
      checks.check_number(name, getattr(self, name))
    for name in ("begin_step", "finetune_steps", "batch_size", "seed"):
      checks.check_int(name, getattr(self, name))
    for name in ("end_step", "frequency", "train_steps", "epochs"):
      checks.check_int(name, getattr(self, name), optional=True)
    for name in ("schedule", "sparsity_structure", "channel_ranking",
                 "channel_norm", "train_split", "eval_split"):
      checks.check_str(name, getattr(self, name))
    for name in ("label_key", "module_file"):
      checks.check_str(name, getattr(self, name), optional=True)

  def _validate_sparsity(self):
    for name in ("target_sparsity", "initial_sparsity"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}`={value!r} is outside [0, 1): it is the fraction of each "
            "pruned kernel's weights set to zero (0.8 = 80% zeros). Use a "
            "value such as 0.5 or 0.8.")
    if self.initial_sparsity > self.target_sparsity:
      raise ValueError(
          f"`initial_sparsity`={self.initial_sparsity} is above "
          f"`target_sparsity`={self.target_sparsity}: the schedule only "
          "raises sparsity. Use an initial_sparsity <= target_sparsity.")
    if self.schedule not in schedules.SCHEDULES:
      raise ValueError(f"`schedule`={self.schedule!r} is not one of "
                       f"{schedules.SCHEDULES}. "
                       "Use 'polynomial' (ramp up) or 'constant'.")

  def _validate_structure(self):
    s = self.sparsity_structure
    if s not in (UNSTRUCTURED, CHANNELS):
      m_by_n = parse_m_by_n(s)
      if m_by_n is None:
        raise ValueError(f"`sparsity_structure`={s!r} is not a known structure. "
                         f"Use {_STRUCTURES_HELP}.")
      m, n = m_by_n
      if not 0 < m < n:
        raise ValueError(
            f"`sparsity_structure`={s!r}: an M:N block needs 0 < M < N (M "
            "zeros in every N consecutive weights), for example '2:4'.")
      object.__setattr__(self, "sparsity_structure", f"{m}:{n}")
    if self.channel_ranking not in CHANNEL_RANKINGS:
      raise ValueError(f"`channel_ranking`={self.channel_ranking!r} is not one "
                       f"of {CHANNEL_RANKINGS}.")
    if self.channel_norm not in CHANNEL_NORMS:
      raise ValueError(f"`channel_norm`={self.channel_norm!r} is not one of "
                       f"{CHANNEL_NORMS}.")
    overlap = set(self.include_layers) & set(self.exclude_layers)
    if overlap:
      raise ValueError(
          f"`include_layers` and `exclude_layers` both list {sorted(overlap)}; "
          "a pattern can only be in one of them.")

  def _validate_steps(self):
    if self.begin_step < 0:
      raise ValueError(f"`begin_step`={self.begin_step} must be >= 0 (0 prunes "
                       "from the first fine-tuning step).")
    if self.end_step is not None and self.end_step <= self.begin_step:
      raise ValueError(
          f"`end_step`={self.end_step} must be greater than `begin_step`="
          f"{self.begin_step}: pruning ramps between them. Use e.g. end_step="
          f"{self.begin_step + 100}, or leave it unset for 70% of the steps.")
    if self.frequency is not None and self.frequency < 1:
      raise ValueError(f"`frequency`={self.frequency} must be >= 1 (steps "
                       "between mask updates).")
    if (self.frequency is not None and self.end_step is not None
        and (self.end_step - self.begin_step) % self.frequency):
      # tfmot updates the mask at begin_step + k * frequency only, so an
      # end_step off that grid never reaches the target sparsity.
      span = self.end_step - self.begin_step
      below = self.begin_step + span // self.frequency * self.frequency
      above = below + self.frequency
      fix = f"{below} or {above}" if below > self.begin_step else str(above)
      raise ValueError(
          f"`end_step`={self.end_step} is not `begin_step`={self.begin_step} "
          f"plus a multiple of `frequency`={self.frequency}, so the last mask "
          "update would fall short of target_sparsity. Use end_step="
          f"{fix}, or leave end_step unset.")
    if self.train_steps is not None and self.epochs is not None:
      raise ValueError(
          f"`train_steps`={self.train_steps} and `epochs`={self.epochs} are "
          "both set; set only one of them.")
    if self.train_steps is not None and self.train_steps < 1:
      raise ValueError(f"`train_steps`={self.train_steps} must be >= 1.")
    if self.epochs is not None and self.epochs < 1:
      raise ValueError(f"`epochs`={self.epochs} must be >= 1.")
    if self.finetune_steps < 0:
      raise ValueError(f"`finetune_steps`={self.finetune_steps} must be >= 0.")
    if self.m_by_n is None and (self.train_steps is not None
                                or self.epochs is None):
      # Known now (and used: an M:N mask is set once, at the first step):
      # check the schedule fits in the steps.
      self.schedule_steps(self.total_steps())

  def _validate_training(self):
    if self.batch_size < 1:
      raise ValueError(f"`batch_size`={self.batch_size} must be >= 1.")
    if not 0 < self.learning_rate < 1:
      raise ValueError(
          f"`learning_rate`={self.learning_rate} must be in (0, 1); "
          "fine-tuning uses Adam, where 1e-4 to 1e-3 is usual.")
    if self.seed < 0:
      raise ValueError(f"`seed`={self.seed} must be >= 0.")
    if not self.train_split:
      raise ValueError("`train_split` is empty; name the Examples split to "
                       "fine-tune on, e.g. 'train'.")
    if self.label_key is not None and not self.label_key.strip():
      raise ValueError("`label_key` is empty; name the label feature of the "
                       "raw Examples, e.g. 'label'.")

  def _validate_search(self):
    object.__setattr__(self, "search_sparsities",
                       parse_sparsities(self.search_sparsities))
    checks.check_int("search_steps", self.search_steps, optional=True)
    gate_values = {k: getattr(self, k) for k in thresholds_lib.QUALITY_FIELDS}
    if not self.search_sparsities:
      given = sorted(k for k, v in gate_values.items() if v is not None)
      if given or self.search_steps is not None:
        raise ValueError(
            f"{given or ['search_steps']} only apply to the pruning search, "
            "which `search_sparsities` turns on (e.g. "
            "search_sparsities='0.5,0.6,0.7,0.8,0.9'). Set it, or drop them and "
            "gate the pruned model with the CompressionEvaluator.")
      return
    # The same rules and messages as the CompressionEvaluator's gate.
    object.__setattr__(self, "metric",
                       self.gate().metric)
    if self.search_steps is not None and self.search_steps < 2:
      raise ValueError(f"`search_steps`={self.search_steps} must be >= 2 "
                       "(fine-tuning steps of each search step).")
    if self.eval_split == "":
      raise ValueError("The pruning search evaluates each step on `eval_split`, "
                       "which is empty; name the eval split, e.g. 'eval'.")
    if self.m_by_n is None and self.search_sparsities[0] < self.initial_sparsity:
      raise ValueError(
          f"`search_sparsities` starts at {self.search_sparsities[0]}, below "
          f"`initial_sparsity`={self.initial_sparsity}; start at or above it.")
    resolve_schedule(self.stage_steps())

  def _validate_distillation(self):
    w = self.distillation_weight
    checks.check_distillation(w, self.distillation_temperature)

  @property
  def distills(self) -> bool:
    """True when the fine-tuning distills from the input model."""
    return self.distillation_weight > 0

  def gate(self) -> thresholds_lib.GateThresholds:
    """The search's gate (the CompressionEvaluator's rules, one definition)."""
    return thresholds_lib.GateThresholds(
        metric=self.metric, max_drop=self.max_drop,
        max_relative_drop=self.max_relative_drop, min_value=self.min_value)

  @property
  def is_search(self) -> bool:
    return bool(self.search_sparsities)

  def stage_steps(self) -> int:
    """Fine-tuning steps of one search step (default: half of ``train_steps``).

    A step continues from the previous step's weights and only moves the
    sparsity one notch, not from zero to the target as a fixed prune does: on
    the demo, 150 steps per step reached 90% at the baseline's accuracy (300
    gave the same sparsity at twice the cost).
    """
    if self.search_steps:
      return self.search_steps
    return max(2, (self.train_steps or schedules.DEFAULT_TRAIN_STEPS) // 2)

  def check_data_inputs(self, has_schema: bool, has_transform: bool) -> None:
    """Checks the data inputs can feed the model (component and executor).

    Without a ``module_file`` (whose ``input_fn`` may feed the model its own
    way), the Examples are decoded with the Schema or the Transform's raw
    feature spec, and the label is read by ``label_key``.
    """
    if self.module_file:
      return
    if not self.label_key:
      raise ValueError(
          "`label_key` is not set: name the label feature of the raw Examples "
          "(e.g. label_key='label'), or give a `module_file` with an input_fn.")
    if not has_schema and not has_transform:
      raise ValueError(
          "Neither `schema` nor `transform_graph` is wired, so the Examples "
          "cannot be decoded. Wire SchemaGen's schema (or the Transform's "
          "transform_graph), or give a `module_file` with an input_fn.")

  # Derived values.

  @property
  def m_by_n(self) -> Optional[Tuple[int, int]]:
    """(M, N) for an M:N structure, else None."""
    return parse_m_by_n(self.sparsity_structure)

  @property
  def effective_target_sparsity(self) -> float:
    """The sparsity the pruned kernels end with: M/N for an M:N structure."""
    m_by_n = self.m_by_n
    if m_by_n:
      return m_by_n[0] / m_by_n[1]
    return self.target_sparsity

  def total_steps(self, train_examples: Optional[int] = None) -> int:
    """Fine-tuning steps: ``train_steps``, or ``epochs`` over the train split.

    Args:
      train_examples: examples in the train split; needed with ``epochs``.
    """
    if self.epochs is None:
      return self.train_steps or schedules.DEFAULT_TRAIN_STEPS
    if not train_examples:
      raise ValueError("`epochs` is set, so the number of train examples is "
                       "needed to count the steps.")
    return self.epochs * math.ceil(train_examples / self.batch_size)

  def steps_per_epoch(self, train_examples: Optional[int] = None) -> Optional[int]:
    if self.epochs is None:
      return None
    return math.ceil(train_examples / self.batch_size)

  def schedule_steps(self, total_steps: int) -> Tuple[int, int, int]:
    """(begin_step, end_step, frequency) for ``total_steps`` fine-tuning steps.

    Fills in the automatic end_step and frequency, and checks the schedule ends
    within the fine-tuning so the target sparsity is reached.

    Raises:
      ValueError: the steps do not fit.
    """
    return resolve_schedule(total_steps, self.begin_step, self.end_step,
                            self.frequency)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_parameters(cls, params: Mapping[str, Any]) -> "PrunerConfig":
    """Builds from component parameters; None means the default, unknown keys
    (other components' or later modes' parameters) are left out."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names and v is not None})

