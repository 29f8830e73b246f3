"""TFX's penguin pipeline (Transform, Keras Trainer, stock Evaluator) plus compression.

The production pipeline a user already has: ExampleGen -> StatisticsGen -> SchemaGen
-> Transform -> Trainer -> stock Evaluator (TFMA thresholds against the latest
blessed model) -> Pusher. Compression is appended with :func:`add_compression`, whose
Pusher pushes the compressed model only when the stock Evaluator blessed the Trainer's
model AND the CompressionEvaluator blessed the compressed one.

The Trainer module (``trainers/penguin_trainer.py``) is TFX's penguin module, Keras 3
as TFX ships it, plus the one line that writes ``model.keras``: run it with
``TF_USE_LEGACY_KERAS`` unset.

    python -m tfx_compression.pipelines.penguin_pipeline --output-dir outputs/penguin
"""

import argparse
import os
import sys
from typing import Any, Dict, List, Optional
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)

# pylint: disable=g-import-not-at-top,wrong-import-position
from tfx_compression.pipelines.compression import add_compression  # noqa: E402
import tensorflow_model_analysis as tfma  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

MODULE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers",
                           "penguin_trainer.py")
LABEL_KEY = "species"
TRAINER_MODULE = "tfx_compression.pipelines.trainers.penguin_trainer"


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    compressed_serving_model_dir: str,
    metadata_path: Optional[str] = None,
    module_file: str = MODULE_FILE,
    train_steps: int = 100,
    eval_steps: int = 5,
    accuracy_threshold: float = 0.6,
    sparsity_structure: Optional[str] = "unstructured",
    target_sparsity: float = 0.5,
    quantization: Optional[str] = "dynamic",
    max_drop: float = 0.05,
    compression_kwargs: Optional[Dict[str, Any]] = None,
    enable_cache: bool = True,
    beam_pipeline_args: Optional[List[str]] = None,
    from_installed_package: bool = False,
) -> tfx.dsl.Pipeline:
  """TFX's penguin pipeline with compression appended by the helper.

  ``from_installed_package`` names the Transform's and Trainer's functions by
  their import path in the installed package (``tfx_compression.pipelines.trainers.penguin_trainer``), as
  a Kubeflow image has them, instead of a module file packaged at compile time.
  """
  code = (dict(preprocessing_fn=f"{TRAINER_MODULE}.preprocessing_fn")
          if from_installed_package else dict(module_file=module_file))
  run = (dict(run_fn=f"{TRAINER_MODULE}.run_fn") if from_installed_package
         else dict(module_file=module_file))
  example_gen = tfx.components.CsvExampleGen(input_base=data_root)
  statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs["examples"])
  schema_gen = tfx.components.SchemaGen(
      statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"], **code)
  trainer = tfx.components.Trainer(
      **run,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(num_steps=train_steps),
      eval_args=tfx.proto.EvalArgs(num_steps=eval_steps))
  model_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(
          type=tfx.types.standard_artifacts.ModelBlessing)).with_id(
              "latest_blessed_model_resolver")
  eval_config = tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          signature_name="serving_default", label_key="species_xf",
          preprocessing_function_names=["transform_features"])],
      slicing_specs=[tfma.SlicingSpec()],
      metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
          class_name="SparseCategoricalAccuracy",
          threshold=tfma.MetricThreshold(
              value_threshold=tfma.GenericValueThreshold(
                  lower_bound={"value": accuracy_threshold}),
              change_threshold=tfma.GenericChangeThreshold(
                  direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                  absolute={"value": -1e-10})))])])
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs["examples"],
      model=trainer.outputs["model"],
      baseline_model=model_resolver.outputs["model"],
      eval_config=eval_config)
  pusher = tfx.components.Pusher(
      model=trainer.outputs["model"],
      model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=serving_model_dir)))
  user_components = [example_gen, statistics_gen, schema_gen, transform, trainer,
                     model_resolver, evaluator, pusher]

  # The few lines a user adds to their own pipeline:
  compression = add_compression(
      model=trainer.outputs["model"],
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"],
      transform_graph=transform.outputs["transform_graph"],
      baseline_blessing=evaluator.outputs["blessing"],
      label_key=LABEL_KEY,
      push_destination=compressed_serving_model_dir,
      sparsity_structure=sparsity_structure,
      target_sparsity=target_sparsity,
      quantization=quantization,
      max_drop=max_drop,
      existing_components=user_components,
      **(compression_kwargs or {}))

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=user_components + compression.components,
      enable_cache=enable_cache,
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              metadata_path) if metadata_path else None),
      # None by default: Beam's defaults (DirectRunner, in memory, one worker).
      # TFX stages a source package of itself for every Beam step given any
      # args (2 s and ~55 MB left in the temp directory, per step and run).
      beam_pipeline_args=list(beam_pipeline_args or []))


def compile_for_kubeflow(image: str, pipeline_root: str, data_root: str,
                         output_path: str) -> str:
  """Writes the penguin pipeline's Kubeflow V2 PipelineJob JSON; returns its path."""
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner  # pylint: disable=g-import-not-at-top
  root = pipeline_root.rstrip("/")
  pipe = create_pipeline(
      pipeline_name="penguin-compression", pipeline_root=pipeline_root,
      data_root=data_root, serving_model_dir=f"{root}/serving_model",
      compressed_serving_model_dir=f"{root}/serving_model_compressed",
      from_installed_package=True)
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
          default_image=image),
      output_dir=os.path.dirname(os.path.abspath(output_path)),
      output_filename=os.path.basename(output_path))
  runner.run(pipe)
  return output_path


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tfx_compression.pipelines.penguin_pipeline",
      description="TFX's penguin pipeline with compression appended, run locally.")
  parser.add_argument("--output-dir", default="outputs/penguin")
  parser.add_argument("--train-steps", type=int, default=100)
  parser.add_argument("--accuracy-threshold", type=float, default=0.6,
                      help="the stock Evaluator's TFMA lower bound on accuracy")
  parser.add_argument("--max-drop", type=float, default=0.05,
                      help="the CompressionEvaluator's allowed accuracy drop")
  parser.add_argument("--quantization", default="dynamic")
  parser.add_argument("--kubeflow-image", default=None,
                      help="compile for Kubeflow with this image instead of "
                           "running locally (needs --pipeline-root, --data-root)")
  parser.add_argument("--pipeline-root", default=None)
  parser.add_argument("--data-root", default=None)
  parser.add_argument("--verbose", action="store_true",
                      help="show every library's output on the console instead "
                           "of <output-dir>/logs/run-<timestamp>.log")
  args = parser.parse_args(argv)
  if args.kubeflow_image:
    from tfx_compression.pipelines import kubeflow_runner  # pylint: disable=g-import-not-at-top
    try:
      image = kubeflow_runner.check_image(args.kubeflow_image)
      if not args.pipeline_root or not args.data_root:
        raise ValueError("--pipeline-root and --data-root are required with "
                         "--kubeflow-image.")
    except (ValueError, kubeflow_runner.UsageError) as e:
      parser.exit(2, f"error: {e}\n")
    path = compile_for_kubeflow(
        image, args.pipeline_root, args.data_root,
        os.path.join(os.path.abspath(args.output_dir), "penguin-compression.json"))
    print(path)
    return 0
  from tfx_compression.pipelines import console, penguin_data  # pylint: disable=g-import-not-at-top
  out = os.path.abspath(args.output_dir)
  # One line per step on the console, the rest in the log (see console.py).
  session = console.Session(verbose=args.verbose)
  try:
    pipe = create_pipeline(
        pipeline_name="penguin_compression",
        pipeline_root=os.path.join(out, "pipeline_root"),
        data_root=os.path.join(out, "data"),
        serving_model_dir=os.path.join(out, "serving_model"),
        compressed_serving_model_dir=os.path.join(out, "serving_model_compressed"),
        metadata_path=os.path.join(out, "metadata.sqlite"),
        train_steps=args.train_steps,
        accuracy_threshold=args.accuracy_threshold,
        max_drop=args.max_drop,
        quantization=args.quantization)
  except (ValueError, TypeError) as e:
    session.abort()
    parser.exit(2, f"error: {e}\n")
  try:
    session.keep_log(os.path.join(out, "logs"))
    penguin_data.ensure_penguins_csv(os.path.join(out, "data"))
    code = session.run(pipe, os.path.join(out, "metadata.sqlite"))
    if code == 0 and session.log_path:
      session.print(f"full log: {session.log_path}")
    return code
  finally:
    session.close()


if __name__ == "__main__":
  sys.exit(main())
