"""Append compression to an existing TFX pipeline in a few lines.

    from tfx_compression import add_compression

    compression = add_compression(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        transform_graph=transform.outputs["transform_graph"],
        baseline_blessing=evaluator.outputs["blessing"],   # the stock Evaluator's
        label_key="species",
        push_destination="/serving/compressed",
        sparsity_structure="unstructured", target_sparsity=0.5,
        quantization="dynamic",
        max_drop=0.01,
        existing_components=components)
    components += compression.components

Or let it search the plan (structure, sparsity, quantization) within the gate:

    compression = add_compression(..., plan=True, objective="size",
                                  max_drop=0.005)   # CompressionPlanner

The compressed model is pushed only when both gates agree: the stock Evaluator blessed
the uncompressed model (``baseline_blessing``), and the CompressionEvaluator blessed the
compressed one against it. Everything here can be written by hand with the components;
this only wires them.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Union

from tfx_compression.components.compression_evaluator.component import CompressionEvaluator
from tfx_compression.components.compression_planner.component import CompressionPlanner
from tfx_compression.components.pruner.component import Pruner
from tfx_compression.components.quantizer.component import Quantizer
from tfx import types
from tfx import v1 as tfx
from tfx.types import standard_artifacts

DEFAULT_IDS = dict(pruner="CompressionPruner", quantizer="CompressionQuantizer",
                   planner="CompressionPlanner",
                   evaluator="CompressionEvaluator", pusher="CompressedModelPusher")


@dataclasses.dataclass
class CompressionComponents:
  """The components to append, in pipeline order, and the channel that is pushed."""
  pruner: Optional[Pruner]
  quantizer: Optional[Quantizer]
  evaluator: CompressionEvaluator
  pusher: Any
  candidate: types.BaseChannel
  planner: Optional[CompressionPlanner] = None

  @property
  def components(self) -> List[Any]:
    return [c for c in (self.pruner, self.quantizer, self.planner,
                        self.evaluator, self.pusher) if c is not None]


def _check_channel(name: str, channel: Any, artifact_type, required: bool) -> None:
  if channel is None:
    if required:
      raise ValueError(f"`{name}` is required: pass the channel of a "
                       f"{artifact_type.TYPE_NAME} artifact (e.g. "
                       f"{_EXAMPLES_OF.get(name, 'a component output')}).")
    return
  if not isinstance(channel, types.BaseChannel):
    raise TypeError(f"`{name}` must be a channel (a component output such as "
                    f"{_EXAMPLES_OF.get(name, 'trainer.outputs[...]')}), got "
                    f"{type(channel).__name__}.")
  if channel.type_name != artifact_type.TYPE_NAME:
    raise TypeError(f"`{name}` must carry {artifact_type.TYPE_NAME} artifacts, "
                    f"got a channel of {channel.type_name}. Wire "
                    f"{_EXAMPLES_OF.get(name, 'the right output')}.")


_EXAMPLES_OF = {
    "model": "trainer.outputs['model']",
    "examples": "example_gen.outputs['examples']",
    "schema": "schema_gen.outputs['schema']",
    "transform_graph": "transform.outputs['transform_graph']",
    "baseline_blessing": "evaluator.outputs['blessing']",
}


def _push_destination(value) -> Any:
  if isinstance(value, str):
    if not value:
      raise ValueError("`push_destination` is empty: give a directory (or a "
                       "PushDestination proto) for the compressed model.")
    return tfx.proto.PushDestination(
        filesystem=tfx.proto.PushDestination.Filesystem(base_directory=value))
  if isinstance(value, tfx.proto.PushDestination):
    return value
  raise TypeError("`push_destination` must be a directory path or a "
                  f"tfx.proto.PushDestination, got {type(value).__name__}.")


def add_compression(
    *,
    model: types.BaseChannel,
    examples: types.BaseChannel,
    label_key: str,
    push_destination: Union[str, Any],
    schema: Optional[types.BaseChannel] = None,
    transform_graph: Optional[types.BaseChannel] = None,
    baseline_blessing: Optional[types.BaseChannel] = None,
    sparsity_structure: Optional[str] = "unstructured",
    target_sparsity: float = 0.5,
    quantization: Optional[str] = "dynamic",
    metric: str = "accuracy",
    max_drop: Optional[float] = 0.01,
    max_relative_drop: Optional[float] = None,
    min_value: Optional[float] = None,
    min_compression_ratio: Optional[float] = None,
    max_latency_ratio: Optional[float] = None,
    existing_components: Sequence[Any] = (),
    id_prefix: str = "",
    pruner_kwargs: Optional[Dict[str, Any]] = None,
    quantizer_kwargs: Optional[Dict[str, Any]] = None,
    evaluator_kwargs: Optional[Dict[str, Any]] = None,
    plan: bool = False,
    objective: str = "size",
    planner_kwargs: Optional[Dict[str, Any]] = None,
    distillation_weight: Optional[float] = None,
    distillation_temperature: Optional[float] = None,
) -> CompressionComponents:
  """Builds Pruner -> Quantizer -> CompressionEvaluator -> Pusher after a Trainer.

  With ``plan=True``: CompressionPlanner -> CompressionEvaluator -> Pusher; the
  planner searches structures, sparsities and quantization modes within the
  same quality thresholds the evaluator then applies.

  Args:
    model: the Trainer's model channel (the baseline).
    examples: the raw Examples channel (train split for fine-tuning and
      representative data, eval split for the gate).
    label_key: the label's name in the raw Examples.
    push_destination: directory or PushDestination for the compressed model.
    schema: the Schema channel (required without a transform_graph).
    transform_graph: the Transform's graph when the Trainer used Transform.
    baseline_blessing: the stock Evaluator's blessing of ``model``; when given
      and not blessed, nothing is pushed.
    sparsity_structure: 'unstructured', 'M:N' (e.g. '2:4'), 'channels', or None
      to skip pruning.
    target_sparsity: the Pruner's target.
    quantization: a Quantizer mode, or None/'none' to push the pruned SavedModel.
    metric, max_drop, max_relative_drop, min_value, min_compression_ratio,
      max_latency_ratio: the CompressionEvaluator's gate.
    existing_components: the user's components, to refuse clashing ids.
    id_prefix: prefix for the ids of the added components.
    pruner_kwargs, quantizer_kwargs, evaluator_kwargs: more parameters.
    plan: search the plan with a CompressionPlanner instead of a fixed
      Pruner + Quantizer (``sparsity_structure``, ``target_sparsity``,
      ``quantization`` and their kwargs are then not used).
    objective: the planner's 'size', 'gzip_size' or 'latency'.
    planner_kwargs: more CompressionPlanner parameters (``structures``,
      ``sparsities``, ``quantization_modes``, ``search_steps``, ...).
    distillation_weight, distillation_temperature: distillation towards
      ``model`` in every fine-tuning added here: the Pruner's, the planner's
      steps, and the Quantizer's when ``quantization='qat'`` (None: each
      component's default, 0 = off).

  Returns:
    CompressionComponents; append ``.components`` to the pipeline.

  Raises:
    TypeError: a channel of the wrong artifact type.
    ValueError: a missing label or input, nothing to compress, clashing ids, or
      any component parameter out of range (checked by the components).
  """
  _check_inputs(model=model, examples=examples, schema=schema,
                transform_graph=transform_graph,
                baseline_blessing=baseline_blessing, label_key=label_key,
                plan=plan, pruner_kwargs=pruner_kwargs,
                quantizer_kwargs=quantizer_kwargs)
  if quantization == "none":
    quantization = None
  if not plan and not sparsity_structure and not quantization:
    raise ValueError("Nothing to compress: `sparsity_structure` and "
                     "`quantization` are both unset. Set at least one.")
  ids = _component_ids(id_prefix, existing_components)
  push = _push_destination(push_destination)
  pruner_kwargs, quantizer_kwargs, planner_kwargs = _with_distillation(
      distillation_weight, distillation_temperature, plan=plan,
      qat=quantization == "qat", pruner_kwargs=pruner_kwargs,
      quantizer_kwargs=quantizer_kwargs, planner_kwargs=planner_kwargs)
  data = dict(examples=examples, schema=schema, transform_graph=transform_graph,
              label_key=label_key)
  pruner = quantizer = planner = None
  candidate = model
  if plan:
    planner = CompressionPlanner(
        model=model, objective=objective, metric=metric, max_drop=max_drop,
        max_relative_drop=max_relative_drop, min_value=min_value, **data,
        **(planner_kwargs or {})).with_id(ids["planner"])
    candidate = planner.outputs["compressed_model"]
  elif sparsity_structure:
    pruner = Pruner(model=model, sparsity_structure=sparsity_structure,
                    target_sparsity=target_sparsity, **data,
                    **(pruner_kwargs or {})).with_id(ids["pruner"])
    candidate = pruner.outputs["pruned_model"]
  if quantization and not plan:
    quantizer = Quantizer(model=candidate, quantization=quantization, **data,
                          **(quantizer_kwargs or {})).with_id(ids["quantizer"])
    candidate = quantizer.outputs["quantized_model"]
  evaluator = CompressionEvaluator(
      baseline_model=model, candidate_model=candidate,
      baseline_blessing=baseline_blessing, metric=metric, max_drop=max_drop,
      max_relative_drop=max_relative_drop, min_value=min_value,
      min_compression_ratio=min_compression_ratio,
      max_latency_ratio=max_latency_ratio, **data,
      **(evaluator_kwargs or {})).with_id(ids["evaluator"])
  pusher = tfx.components.Pusher(
      model=candidate, model_blessing=evaluator.outputs["blessing"],
      push_destination=push).with_id(ids["pusher"])
  return CompressionComponents(pruner, quantizer, evaluator, pusher, candidate,
                               planner)


def _check_inputs(*, model, examples, schema, transform_graph,
                  baseline_blessing, label_key, plan, pruner_kwargs,
                  quantizer_kwargs) -> None:
  """add_compression's channel types, label and plan checks."""
  _check_channel("model", model, standard_artifacts.Model, True)
  _check_channel("examples", examples, standard_artifacts.Examples, True)
  _check_channel("schema", schema, standard_artifacts.Schema, False)
  _check_channel("transform_graph", transform_graph,
                 standard_artifacts.TransformGraph, False)
  _check_channel("baseline_blessing", baseline_blessing,
                 standard_artifacts.ModelBlessing, False)
  if schema is None and transform_graph is None:
    raise ValueError("Pass `schema` (schema_gen.outputs['schema']) or "
                     "`transform_graph`: the components need one to parse the "
                     "raw Examples.")
  if not isinstance(label_key, str) or not label_key.strip():
    raise ValueError(f"`label_key`={label_key!r}: name the label as it is in the "
                     "raw Examples (e.g. 'species').")
  if not isinstance(plan, bool):
    raise TypeError(f"`plan` must be True or False, got {plan!r}.")
  if plan and (pruner_kwargs or quantizer_kwargs):
    raise ValueError(
        "`plan`=True replaces the Pruner and the Quantizer with the "
        "CompressionPlanner, so `pruner_kwargs`/`quantizer_kwargs` would be "
        "ignored; pass those parameters in `planner_kwargs` instead.")


def _component_ids(id_prefix: str, existing_components: Sequence[Any]
                   ) -> Dict[str, str]:
  """The added components' ids, refused when the pipeline already has them."""
  if not isinstance(id_prefix, str):
    raise TypeError(f"`id_prefix` must be a string, got {id_prefix!r}.")
  ids = {k: id_prefix + v for k, v in DEFAULT_IDS.items()}
  taken = {getattr(c, "id", None) for c in existing_components}
  clashes = sorted(taken & set(ids.values()))
  if clashes:
    raise ValueError(f"Component ids {clashes} are already used in "
                     "`existing_components`; pass `id_prefix` (e.g. "
                     "id_prefix='Mobile') to give the added components other ids.")
  return ids


def _with_distillation(weight, temperature, *, plan, qat, pruner_kwargs,
                       quantizer_kwargs, planner_kwargs):
  """(pruner, quantizer, planner kwargs) with the distillation arguments added
  to every fine-tuning: the planner's, or the Pruner's and a QAT Quantizer's."""
  distill = {k: v for k, v in (("distillation_weight", weight),
                               ("distillation_temperature", temperature))
             if v is not None}
  for name, kwargs in (("pruner_kwargs", pruner_kwargs),
                       ("quantizer_kwargs", quantizer_kwargs),
                       ("planner_kwargs", planner_kwargs)):
    both = sorted(set(distill) & set(kwargs or {}))
    if both:
      raise ValueError(
          f"`{both[0]}` is given both as an argument and in `{name}`; give it "
          "once (the argument applies to every fine-tuning).")
  if distill:
    if plan:
      planner_kwargs = {**(planner_kwargs or {}), **distill}
    else:
      pruner_kwargs = {**(pruner_kwargs or {}), **distill}
      if qat:
        quantizer_kwargs = {**(quantizer_kwargs or {}), **distill}
  return pruner_kwargs, quantizer_kwargs, planner_kwargs
