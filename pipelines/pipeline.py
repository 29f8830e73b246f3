"""The demo pipeline: digits -> Trainer -> Pruner -> Quantizer -> gate -> Pusher.

One ``create_pipeline(...)`` factory, in the shape of TFX's penguin example, used by
the local runner, the Kubeflow runner, the tests and the benchmark.
"""

import os
from typing import Any, Dict, List, Optional, Union

from tfx_compression.components import (  # pylint: disable=g-multiple-import
    CompressionEvaluator, CompressionPlanner, Pruner, Quantizer)
from tfx import v1 as tfx

_TRAINERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers")
DEMO_MODULE = os.path.join(_TRAINERS, "digits_trainer.py")
# The same CNN in Keras 3 (saved with tf.saved_model.save plus model.keras).
DEMO_MODULE_KERAS3 = os.path.join(_TRAINERS, "digits_trainer_keras3.py")
TRAINER_RUN_FNS = {
    2: "tfx_compression.pipelines.trainers.digits_trainer.run_fn",
    3: "tfx_compression.pipelines.trainers.digits_trainer_keras3.run_fn",
}
KERAS_CHOICES = (2, 3)
LABEL_KEY = "label"
QUANTIZATION_CHOICES = ("none", "dynamic", "float16", "int8", "int16x8", "qat")


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    metadata_path: Optional[str] = None,
    module_file: Optional[str] = None,
    train_steps: Union[int, Any] = 600,
    eval_steps: int = 10,
    target_sparsity: Union[float, Any] = 0.8,
    sparsity_structure: str = "unstructured",
    prune_steps: Union[int, Any] = 300,
    quantization: str = "int8",
    max_drop: Union[float, Any] = 0.01,
    min_value: Optional[float] = None,
    min_compression_ratio: Optional[float] = None,
    enable_cache: bool = True,
    beam_pipeline_args: Optional[List[str]] = None,
    search_sparsities: Optional[str] = None,
    pruner_kwargs: Optional[Dict[str, Any]] = None,
    quantizer_kwargs: Optional[Dict[str, Any]] = None,
    evaluator_kwargs: Optional[Dict[str, Any]] = None,
    trainer_run_fn: Optional[str] = None,
    train_args: Optional[Any] = None,
    keras: int = 2,
    plan: bool = False,
    objective: str = "size",
    planner_kwargs: Optional[Dict[str, Any]] = None,
) -> tfx.dsl.Pipeline:
  """Builds the demo compression pipeline.

  Args:
    pipeline_name: name recorded in ML Metadata.
    pipeline_root: where artifacts are written.
    data_root: directory of CSV files (64 pixel columns and ``label``).
    serving_model_dir: the Pusher's filesystem destination.
    metadata_path: SQLite ML Metadata file (local runs); None for Kubeflow.
    module_file: the Trainer module (default: the demo's, in ``keras``).
    train_steps: Trainer steps.
    eval_steps: Trainer evaluation steps.
    target_sparsity: the Pruner's target.
    sparsity_structure: 'unstructured', an M:N block such as '2:4', or 'channels'.
    prune_steps: the Pruner's fine-tuning steps.
    quantization: a Quantizer mode, or 'none' to gate the pruned SavedModel.
    max_drop: allowed accuracy drop of the candidate (0.01 = one point).
    min_value: optional absolute accuracy floor.
    min_compression_ratio: optional size gate.
    enable_cache: reuse results of unchanged steps.
    beam_pipeline_args: Beam options for ExampleGen, StatisticsGen and the gate.
    search_sparsities: when set (e.g. "0.5,0.6,0.7,0.8,0.9"), the Pruner
      searches these sparsities step by step and keeps the sparsest that passes.
    pruner_kwargs, quantizer_kwargs, evaluator_kwargs: more component parameters.
    trainer_run_fn: dotted path of the Trainer's ``run_fn`` in an installed
      package (e.g. 'tfx_compression.pipelines.trainers.digits_trainer.run_fn'), used instead of
      ``module_file``: nothing is packaged or uploaded when compiling (Kubeflow).
    train_args: replaces ``train_steps``: a TrainArgs proto, or a str
      RuntimeParameter holding its JSON, e.g. '{"num_steps": 600}' (Kubeflow).
    keras: 2 trains the demo CNN with tf_keras (``digits_trainer.py``), 3 with
      Keras 3 (``digits_trainer_keras3.py``); the components follow the model.
    plan: a CompressionPlanner searches structure, sparsity and quantization
      within the gate (``max_drop``, ``min_value``) instead of the fixed
      Pruner -> Quantizer; half of ``prune_steps`` is its ``search_steps``.
    objective: the planner's 'size', 'gzip_size' or 'latency'.
    planner_kwargs: more CompressionPlanner parameters.

  Returns:
    The TFX pipeline.
  """
  if quantization not in QUANTIZATION_CHOICES:
    raise ValueError(f"`quantization`={quantization!r} is not one of "
                     f"{QUANTIZATION_CHOICES}.")
  if isinstance(keras, bool) or keras not in KERAS_CHOICES:
    raise ValueError(f"`keras`={keras!r} must be 2 (tf_keras) or 3 (Keras 3).")
  if keras == 3 and quantization == "qat":
    raise ValueError(
        "`quantization`='qat' needs tensorflow-model-optimization, which works "
        "on Keras 2 models only, and `keras`=3 trains a Keras 3 model. Use "
        "quantization='int8' instead.")
  if module_file is None:
    module_file = DEMO_MODULE_KERAS3 if keras == 3 else DEMO_MODULE
  example_gen = tfx.components.CsvExampleGen(input_base=data_root)
  statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs["examples"])
  schema_gen = tfx.components.SchemaGen(
      statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
  trainer = tfx.components.Trainer(
      module_file=None if trainer_run_fn else module_file,
      run_fn=trainer_run_fn,
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"],
      train_args=(train_args if train_args is not None
                  else tfx.proto.TrainArgs(num_steps=train_steps)),
      eval_args=tfx.proto.EvalArgs(num_steps=eval_steps))

  compression, candidate = _compression_steps(
      trainer.outputs["model"], example_gen.outputs["examples"],
      schema_gen.outputs["schema"], plan=plan, objective=objective,
      target_sparsity=target_sparsity, sparsity_structure=sparsity_structure,
      prune_steps=prune_steps, quantization=quantization, max_drop=max_drop,
      min_value=min_value, search_sparsities=search_sparsities,
      pruner_kwargs=pruner_kwargs, quantizer_kwargs=quantizer_kwargs,
      planner_kwargs=planner_kwargs)
  components_list = [example_gen, statistics_gen, schema_gen, trainer,
                     *compression]
  evaluator = CompressionEvaluator(
      baseline_model=trainer.outputs["model"],
      candidate_model=candidate,
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"],
      label_key=LABEL_KEY,
      metric="accuracy",
      max_drop=max_drop,
      min_value=min_value,
      min_compression_ratio=min_compression_ratio,
      **(evaluator_kwargs or {}))
  pusher = tfx.components.Pusher(
      model=candidate,
      model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=serving_model_dir)))
  components_list += [evaluator, pusher]

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=components_list,
      enable_cache=enable_cache,
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              metadata_path) if metadata_path else None),
      # None by default: Beam's defaults (DirectRunner, in memory, one worker).
      # TFX stages a source package of itself for every Beam step given any
      # args (2 s and ~55 MB left in the temp directory, per step and run).
      beam_pipeline_args=list(beam_pipeline_args or []),
  )


def _compression_steps(model, examples, schema, *, plan, objective,
                       target_sparsity, sparsity_structure, prune_steps,
                       quantization, max_drop, min_value, search_sparsities,
                       pruner_kwargs, quantizer_kwargs, planner_kwargs):
  """The steps between the Trainer and the gate: a CompressionPlanner, or a
  Pruner then (unless quantization is 'none') a Quantizer.

  Returns:
    (the components, the channel of the model the gate measures and pushes).
  """
  if plan:
    planner = CompressionPlanner(
        model=model, examples=examples, schema=schema,
        label_key=LABEL_KEY, objective=objective,
        # Each step continues from the last: half the fixed run's steps, as
        # the Pruner's own search.
        search_steps=(max(1, prune_steps // 2) if isinstance(prune_steps, int)
                      else prune_steps),
        metric="accuracy", max_drop=max_drop, min_value=min_value,
        **(planner_kwargs or {}))
    return [planner], planner.outputs["compressed_model"]
  pruner_args = dict(
      model=model, examples=examples, schema=schema,
      label_key=LABEL_KEY,
      target_sparsity=target_sparsity,
      sparsity_structure=sparsity_structure,
      train_steps=prune_steps,
  )
  if search_sparsities:
    # The search gates each step with the same thresholds as the final gate.
    pruner_args.update(search_sparsities=search_sparsities, max_drop=max_drop,
                       min_value=min_value)
  pruner_args.update(pruner_kwargs or {})
  pruner = Pruner(**pruner_args)
  if quantization == "none":
    return [pruner], pruner.outputs["pruned_model"]
  quantizer = Quantizer(
      model=pruner.outputs["pruned_model"], examples=examples, schema=schema,
      label_key=LABEL_KEY,
      quantization=quantization,
      **(quantizer_kwargs or {}))
  return [pruner, quantizer], quantizer.outputs["quantized_model"]
