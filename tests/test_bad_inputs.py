"""The table of bad inputs: every one gives a clear error or a NOT_BLESSED with the reason.

Each row of ``TABLE`` is one bad input to a component, ``add_compression``,
``create_pipeline`` or a runner. ``test_bad_input`` runs it and checks:

* it fails at the stage the row says: ``definition`` (building the component or
  the pipeline, or parsing a runner's flags: before anything runs) or ``run``
  (``Executor().Do`` on the fixtures' artifacts, with the smallest step counts);
* with the exception type the row says (or exit code 2 for a runner, or a
  NOT_BLESSED blessing for the CompressionEvaluator);
* and a message naming the parameter or input (``name``), the value received
  (``value``) and what to do (``hint``);
* a failed run leaves no output that looks finished.

docs/bad_inputs.md lists every row (checked below); regenerate its table with
``python -m tests.test_bad_inputs``.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
from typing import Any, Dict, Optional, Tuple

import tfx_compression  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow_transform.tf_metadata import schema_utils
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from tfx_compression.components.common import features
from tfx_compression.components.common import model_io
from tfx_compression.components.compression_evaluator import evaluation
from tfx_compression.components.compression_evaluator import executor as evaluator_executor
from tfx_compression.components.pruner import executor as pruner_executor
from tfx_compression.components.pruner import pruning
from tfx_compression.components.quantizer import executor as quantizer_executor
from tfx_compression.pipelines.trainers import digits_trainer
from tests import fixtures
from tests import test_safe_loading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "bad_inputs.md")

DEFINITION = "definition"
RUN = "run"
NOT_BLESSED = "NOT_BLESSED"
EXIT_2 = "exit 2"

PRUNER = "Pruner"
QUANTIZER = "Quantizer"
EVALUATOR = "CompressionEvaluator"
ADD_COMPRESSION = "add_compression"
CREATE_PIPELINE = "create_pipeline"
LOCAL_RUNNER = "local runner"
KUBEFLOW_RUNNER = "kubeflow runner"


class Fixture(str):
  """A parameter value or input taken from the pytest fixture of this name."""


class Prepared(str):
  """A runner argument: the path ``PREPARED[name](tmp_path)`` makes before the run."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One bad input and what must happen.

  Attributes:
    id: unique, listed in docs/bad_inputs.md.
    where: the component, helper or runner that gets the input.
    bad_input: what is wrong, in words (the docs' table).
    stage: DEFINITION or RUN.
    expect: the exception class, NOT_BLESSED or EXIT_2.
    name, value, hint: must each appear in the message (the verdict for
      NOT_BLESSED): the parameter or input, the value received, what to do.
    params: parameters (definition: constructor arguments, channels too; run:
      exec_properties) over the defaults.
    inputs: run rows: input key -> Fixture naming the artifact, or None to
      leave the input out.
    argv: runner rows: the command-line arguments.
  """
  id: str
  where: str
  bad_input: str
  stage: str
  expect: Any
  name: str
  value: str
  hint: str
  params: Dict[str, Any] = dataclasses.field(default_factory=dict)
  inputs: Dict[str, Optional[Fixture]] = dataclasses.field(default_factory=dict)
  argv: Tuple[str, ...] = ()

  @property
  def outcome(self) -> str:
    if self.expect == NOT_BLESSED:
      return "no error: `NOT_BLESSED`, the verdict says why,"
    if self.expect == EXIT_2:
      return "one-line `error:`, exit code 2, nothing written,"
    return f"`{self.expect.__name__}`"


def _channel(artifact_type):
  return tfx.dsl.Channel(type=artifact_type)


# Channels of the wrong type, for rows that wire one.
EXAMPLES_CHANNEL = _channel(standard_artifacts.Examples)

TABLE = (
    # --- Pruner, when the pipeline is defined -------------------------------
    Row("pruner-sparsity-out-of-range", PRUNER, "`target_sparsity=1.5`",
        DEFINITION, ValueError, "`target_sparsity`", "1.5", "Use a value such as",
        params=dict(target_sparsity=1.5)),
    Row("pruner-sparsity-not-a-number", PRUNER, "`target_sparsity='high'`",
        DEFINITION, TypeError, "`target_sparsity`", "'high'", "must be a number",
        params=dict(target_sparsity="high")),
    Row("pruner-unknown-structure", PRUNER, "`sparsity_structure='blocks'`",
        DEFINITION, ValueError, "`sparsity_structure`", "'blocks'", "Use 'unstructured'",
        params=dict(sparsity_structure="blocks")),
    Row("pruner-m-by-n-inverted", PRUNER, "`sparsity_structure='4:2'` (M > N)",
        DEFINITION, ValueError, "`sparsity_structure`", "'4:2'", "for example '2:4'",
        params=dict(sparsity_structure="4:2")),
    Row("pruner-missing-label", PRUNER, "`label_key` not given", DEFINITION,
        ValueError, "`label_key`", "is not set", "label_key='label'",
        params=dict(label_key=None)),
    Row("pruner-empty-label", PRUNER, "`label_key=''`", DEFINITION, ValueError,
        "`label_key`", "is empty", "e.g. 'label'", params=dict(label_key="")),
    Row("pruner-end-before-begin", PRUNER, "`begin_step=100, end_step=50`",
        DEFINITION, ValueError, "`end_step`", "=50", "Use e.g. end_step=",
        params=dict(begin_step=100, end_step=50)),
    Row("pruner-steps-and-epochs", PRUNER, "`train_steps=100` and `epochs=2`",
        DEFINITION, ValueError, "`epochs`", "=2", "set only one",
        params=dict(train_steps=100, epochs=2)),
    Row("pruner-too-few-steps", PRUNER, "`train_steps=1`", DEFINITION,
        ValueError, "`train_steps`", "1 step(s)", "Raise `train_steps`",
        params=dict(train_steps=1)),
    Row("pruner-learning-rate-too-high", PRUNER, "`learning_rate=5.0`",
        DEFINITION, ValueError, "`learning_rate`", "5.0", "1e-4 to 1e-3",
        params=dict(learning_rate=5.0)),
    Row("pruner-layers-not-strings", PRUNER, "`include_layers=3`", DEFINITION,
        TypeError, "`include_layers`", "int 3", "a list of strings",
        params=dict(include_layers=3)),
    Row("pruner-gate-without-search", PRUNER,
        "`max_drop=0.01` without `search_sparsities`", DEFINITION, ValueError,
        "`search_sparsities`", "['max_drop']", "Set it, or drop them",
        params=dict(max_drop=0.01)),
    Row("pruner-search-not-rising", PRUNER, "`search_sparsities='0.8,0.5'`",
        DEFINITION, ValueError, "`search_sparsities`", "'0.8,0.5'", "e.g. '0.5,0.6",
        params=dict(search_sparsities="0.8,0.5")),
    Row("pruner-no-schema", PRUNER, "neither `schema` nor `transform_graph` wired",
        DEFINITION, ValueError, "`schema`", "Neither", "Wire SchemaGen's schema",
        params=dict(schema=None)),
    Row("pruner-model-of-wrong-type", PRUNER,
        "`model` wired to an Examples channel", DEFINITION, TypeError,
        "model", "Examples", "should be a Channel of type",
        params=dict(model=EXAMPLES_CHANNEL)),
    # --- Pruner, at run time ------------------------------------------------
    Row("pruner-runtime-sparsity-out-of-range", PRUNER,
        "runtime parameter `target_sparsity=1.2`", RUN, ValueError,
        "`target_sparsity`", "1.2", "Use a value such as",
        params=dict(target_sparsity=1.2)),
    Row("pruner-label-misspelled", PRUNER, "`label_key='lable'`", RUN,
        features.DataError, "`label_key`", "'lable'", "Set `label_key`",
        params=dict(label_key="lable")),
    Row("pruner-unknown-split", PRUNER, "`train_split='training'`", RUN,
        ValueError, "`train_split`", "'training'", "Use one of those",
        params=dict(train_split="training")),
    Row("pruner-empty-train-split", PRUNER, "the train split holds no example",
        RUN, features.DataError, "'train' split", "is empty", "Check the ExampleGen",
        inputs=dict(examples=Fixture("empty_train_examples"))),
    Row("pruner-tflite-model", PRUNER, "`model` is a TFLite model", RUN,
        model_io.ModelLoadError, "`model`", "model.tflite", "Wire the Trainer's",
        inputs=dict(model=Fixture("tflite_model"))),
    Row("pruner-savedmodel-without-keras", PRUNER,
        "`model` saved with tf.saved_model.save (Estimator-like, no Keras "
        "metadata)", RUN, model_io.ModelLoadError, "`model`",
        "without Keras metadata", "save_format='tf'",
        inputs=dict(model=Fixture("plain_savedmodel"))),
    Row("pruner-keras3-savedmodel-without-model-keras", PRUNER,
        "`model` is a Keras 3 model's SavedModel without `model.keras` beside "
        "it", RUN, model_io.ModelLoadError, "`model`",
        "written from a Keras 3 model", model_io.KERAS3_SAVE_LINE,
        inputs=dict(model=Fixture("keras3_savedmodel_only"))),
    Row("pruner-empty-model-dir", PRUNER, "`model` directory is empty", RUN,
        model_io.ModelLoadError, "`model`", "no saved_model.pb", "Wire a Trainer's",
        inputs=dict(model=Fixture("empty_model"))),
    Row("pruner-truncated-saved-model-pb", PRUNER,
        "`model` with a truncated saved_model.pb", RUN, model_io.ModelLoadError,
        "`model`", "truncated_model", "re-run the step that wrote it",
        inputs=dict(model=Fixture("truncated_model"))),
    Row("pruner-garbage-variables", PRUNER,
        "`model` whose variables file holds garbage bytes", RUN,
        model_io.ModelLoadError, "`model`", "garbage_variables_model",
        "Re-run the step that wrote it",
        inputs=dict(model=Fixture("garbage_variables_model"))),
    Row("pruner-module-file-missing", PRUNER, "`module_file` does not exist",
        RUN, ValueError, "`module_file`", "no_such_module.py", "Give the path",
        params=dict(module_file="/no/such/dir/no_such_module.py")),
    Row("pruner-module-file-defines-nothing", PRUNER,
        "`module_file` defines neither `input_fn` nor `custom_objects`", RUN,
        ValueError, "`module_file`", "empty_module.py", "uses only those two names",
        params=dict(module_file=Fixture("empty_module_file"))),
    Row("pruner-custom-layer-not-given", PRUNER,
        "`model` has a custom layer and no `custom_objects`", RUN,
        model_io.ModelLoadError, "`model`", "Scale",
        "pass it as the component's `module_file`",
        inputs=dict(model=Fixture("custom_layer_model"))),
    Row("pruner-nan-loss", PRUNER,
        "NaN feature values in the train split: fine-tuning goes NaN", RUN,
        pruning.NonFiniteLossError, "`learning_rate`", "NaN",
        "check the train split for NaN",
        inputs=dict(examples=Fixture("nan_examples"), schema=Fixture("float_schema"))),
    # --- Quantizer, when the pipeline is defined ----------------------------
    Row("quantizer-unknown-mode", QUANTIZER, "`quantization='int4'`",
        DEFINITION, ValueError, "`quantization`", "'int4'", "Use one of",
        params=dict(quantization="int4")),
    Row("quantizer-mode-not-a-string", QUANTIZER, "`quantization=8`",
        DEFINITION, TypeError, "`quantization`", "int 8", "Use one of",
        params=dict(quantization=8)),
    Row("quantizer-int8-without-examples", QUANTIZER,
        "`quantization='int8'` with no `examples`", DEFINITION, ValueError,
        "`examples`", "int8", "Wire the pipeline's Examples",
        params=dict(quantization="int8", examples=None)),
    Row("quantizer-int8-without-schema", QUANTIZER,
        "`quantization='int8'` with no `schema`", DEFINITION, ValueError,
        "`schema`", "neither is set", "Wire `schema`",
        params=dict(quantization="int8", schema=None)),
    Row("quantizer-qat-without-label", QUANTIZER,
        "`quantization='qat'` with no `label_key`", DEFINITION, ValueError,
        "`label_key`", "got None", "e.g. 'label'",
        params=dict(quantization="qat", label_key=None)),
    Row("quantizer-int8-io-contradicts-mode", QUANTIZER,
        "`int8_io_type='int8'` with `quantization='dynamic'`", DEFINITION,
        ValueError, "`int8_io_type`", "'int8'", "Leave int8_io_type='float32'",
        params=dict(quantization="dynamic", int8_io_type="int8")),
    Row("quantizer-pack-inputs-not-a-flag", QUANTIZER, "`pack_inputs=2`",
        DEFINITION, ValueError, "`pack_inputs`", "=2", "must be 0 or 1",
        params=dict(quantization="int8", pack_inputs=2)),
    Row("quantizer-no-calibration-samples", QUANTIZER,
        "`num_representative_samples=0` with `quantization='int8'`",
        DEFINITION, ValueError, "`num_representative_samples`", "=0",
        "Use a value >= 1", params=dict(quantization="int8",
                                        num_representative_samples=0)),
    # --- Quantizer, at run time ---------------------------------------------
    Row("quantizer-runtime-unknown-mode", QUANTIZER,
        "runtime parameter `quantization='int4'`", RUN, ValueError,
        "`quantization`", "'int4'", "Use one of",
        params=dict(quantization="int4")),
    Row("quantizer-runtime-int8-without-examples", QUANTIZER,
        "runtime parameter `quantization='int8'`, no `examples` wired", RUN,
        ValueError, "`examples`", "int8", "Wire the pipeline's Examples",
        params=dict(quantization="int8"), inputs=dict(examples=None)),
    Row("quantizer-tflite-model", QUANTIZER, "`model` is already TFLite", RUN,
        model_io.ModelLoadError, "`model`", "model.tflite", "Wire the Trainer's",
        inputs=dict(model=Fixture("tflite_model"))),
    Row("quantizer-keras3-savedmodel-without-model-keras", QUANTIZER,
        "`model` is a Keras 3 model's SavedModel without `model.keras`", RUN,
        model_io.ModelLoadError, "`model`", "written from a Keras 3 model",
        model_io.KERAS3_SAVE_LINE,
        inputs=dict(model=Fixture("keras3_savedmodel_only"))),
    Row("quantizer-qat-on-keras3", QUANTIZER,
        "`quantization='qat'` on a Keras 3 model (Keras 3 has no QAT)", RUN,
        ValueError, "quantization='qat'", "this model is Keras 3",
        "quantization='int8'",
        params=dict(quantization="qat"),
        inputs=dict(model=Fixture("keras3_model"))),
    Row("quantizer-label-misspelled", QUANTIZER,
        "`label_key='lable'` with `quantization='qat'`", RUN, features.DataError,
        "`label_key`", "'lable'", "Set `label_key`",
        params=dict(quantization="qat", label_key="lable")),
    Row("quantizer-empty-train-split", QUANTIZER,
        "int8 calibration on an empty train split", RUN, features.DataError,
        "'train' split", "is empty", "Check the ExampleGen",
        params=dict(quantization="int8"),
        inputs=dict(examples=Fixture("empty_train_examples"))),
    Row("quantizer-module-file-without-custom-objects", QUANTIZER,
        "`module_file` without `custom_objects`", RUN, ValueError,
        "`module_file`", "empty_module.py", "a dict of name",
        params=dict(module_file=Fixture("empty_module_file"))),
    Row("quantizer-custom-layer-not-given", QUANTIZER,
        "`model` has a custom layer and no `custom_objects`", RUN,
        model_io.ModelLoadError, "`model`", "Scale",
        "pass it as the component's `module_file`",
        inputs=dict(model=Fixture("custom_layer_model"))),
    Row("quantizer-qat-nan-loss", QUANTIZER,
        "NaN feature values in the train split: QAT goes NaN", RUN, ValueError,
        "`learning_rate`", "NaN", "check the train split for NaN",
        params=dict(quantization="qat", qat_steps=2, batch_size=8),
        inputs=dict(examples=Fixture("nan_examples"), schema=Fixture("float_schema"))),
    # --- CompressionEvaluator, when the pipeline is defined -----------------
    Row("evaluator-no-quality-threshold", EVALUATOR,
        "no `max_drop`, `max_relative_drop` or `min_value`", DEFINITION,
        ValueError, "`max_drop`", "none was set", "For example max_drop=0.01",
        params=dict(max_drop=None)),
    Row("evaluator-unknown-metric", EVALUATOR, "`metric='acc'`", DEFINITION,
        ValueError, "`metric`", "'acc'", "Use one of",
        params=dict(metric="acc")),
    Row("evaluator-negative-max-drop", EVALUATOR, "`max_drop=-0.01`",
        DEFINITION, ValueError, "`max_drop`", "-0.01", "Use a value >= 0",
        params=dict(max_drop=-0.01)),
    Row("evaluator-relative-drop-out-of-range", EVALUATOR,
        "`max_relative_drop=1.5`", DEFINITION, ValueError,
        "`max_relative_drop`", "1.5", "(0.02 = 2% of it)",
        params=dict(max_relative_drop=1.5)),
    Row("evaluator-min-value-below-zero", EVALUATOR,
        "`min_value=-0.5` for accuracy", DEFINITION, ValueError, "`min_value`",
        "-0.5", "Use a value in [0, 1]", params=dict(min_value=-0.5)),
    Row("evaluator-floor-on-lower-is-better", EVALUATOR,
        "`min_value=0.5` with `metric='crossentropy'` (contradicting thresholds)",
        DEFINITION, ValueError, "`min_value`", "'crossentropy'",
        "Use `max_drop` or `max_relative_drop`",
        params=dict(metric="crossentropy", min_value=0.5)),
    Row("evaluator-latency-gate-without-timing", EVALUATOR,
        "`max_latency_ratio=1.0` with `latency_samples=0` (contradicting)",
        DEFINITION, ValueError, "`latency_samples`", "=0",
        "Set latency_samples >= 1", params=dict(max_latency_ratio=1.0,
                                                latency_samples=0)),
    Row("evaluator-compression-ratio-not-positive", EVALUATOR,
        "`min_compression_ratio=0`", DEFINITION, ValueError,
        "`min_compression_ratio`", "=0", "4.0 = four times smaller",
        params=dict(min_compression_ratio=0)),
    Row("evaluator-missing-label", EVALUATOR, "`label_key` not given",
        DEFINITION, ValueError, "`label_key`", "is required",
        "label_key='label'", params=dict(label_key=None)),
    Row("evaluator-batch-size-not-an-int", EVALUATOR, "`batch_size='256'`",
        DEFINITION, TypeError, "`batch_size`", "str '256'", "must be an integer",
        params=dict(batch_size="256")),
    Row("evaluator-unknown-compression-measure", EVALUATOR,
        "`compression_measure='zip'`", DEFINITION, ValueError,
        "`compression_measure`", "'zip'", "'gzip' bytes after gzip",
        params=dict(compression_measure="zip")),
    # --- CompressionEvaluator, at run time ----------------------------------
    Row("evaluator-runtime-contradicting-thresholds", EVALUATOR,
        "runtime `metric='crossentropy'` with `min_value=0.9`", RUN, ValueError,
        "`min_value`", "'crossentropy'", "Use `max_drop` or `max_relative_drop`",
        params=dict(metric="crossentropy", min_value=0.9)),
    Row("evaluator-label-misspelled", EVALUATOR, "`label_key='lable'`", RUN,
        features.DataError, "`label_key`", "'lable'", "Set `label_key`",
        params=dict(label_key="lable")),
    Row("evaluator-unknown-split", EVALUATOR, "`eval_split='test'`", RUN,
        ValueError, "`eval_split`", "'test'", "Use one of those",
        params=dict(eval_split="test")),
    Row("evaluator-empty-eval-split", EVALUATOR,
        "the eval split holds no example", RUN, features.DataError,
        "'eval' split", "is empty", "writes no blessing",
        inputs=dict(examples=Fixture("empty_eval_examples"))),
    Row("evaluator-no-schema", EVALUATOR,
        "no `schema` (or `transform_graph`) wired", RUN,
        evaluation.EvaluationError, "`schema`", "needs", "wire the SchemaGen",
        inputs=dict(schema=None)),
    Row("evaluator-tflite-baseline", EVALUATOR, "`baseline_model` is TFLite",
        RUN, evaluation.EvaluationError, "`baseline_model`", "TFLite model",
        "must be the Keras SavedModel",
        inputs=dict(baseline_model=Fixture("tflite_model"))),
    Row("evaluator-unreadable-tflite", EVALUATOR,
        "`candidate_model` is a model.tflite of garbage bytes", RUN,
        model_io.ModelLoadError, "`candidate_model`", "model.tflite",
        "Re-run the step that wrote it",
        inputs=dict(candidate_model=Fixture("garbage_tflite_model"))),
    Row("evaluator-truncated-baseline", EVALUATOR,
        "`baseline_model` with a truncated saved_model.pb", RUN,
        model_io.ModelLoadError, "`baseline_model`", "truncated_model",
        "re-run the step that wrote it",
        inputs=dict(baseline_model=Fixture("truncated_model"))),
    Row("evaluator-savedmodel-without-keras", EVALUATOR,
        "`candidate_model` saved with tf.saved_model.save", RUN,
        model_io.ModelLoadError, "`candidate_model`", "without Keras metadata",
        "save_format='tf'",
        inputs=dict(candidate_model=Fixture("plain_savedmodel"))),
    Row("evaluator-custom-layer-not-given", EVALUATOR,
        "`candidate_model` has a custom layer and no `custom_objects`", RUN,
        model_io.ModelLoadError, "`candidate_model`", "Scale",
        "pass it as the component's `module_file`",
        inputs=dict(candidate_model=Fixture("custom_layer_model"))),
    Row("evaluator-module-file-missing", EVALUATOR,
        "`module_file` does not exist", RUN, evaluation.EvaluationError,
        "`module_file`", "no_such_module.py", "Give the path",
        params=dict(module_file="/no/such/dir/no_such_module.py")),
    Row("evaluator-nan-predictions", EVALUATOR,
        "the candidate predicts NaN (NaN weights)", RUN, NOT_BLESSED,
        "candidate predictions", "NaN", "NOT BLESSED because",
        inputs=dict(candidate_model=Fixture("nan_model"))),
    # --- The gate blesses only what it measured (issue 17) ------------------
    Row("evaluator-max-drop-whole-range", EVALUATOR,
        "`max_drop=5` on accuracy (bounded by [0, 1]: it cannot fail)",
        DEFINITION, ValueError, "`max_drop`", "5.0", "Use a value below 1",
        params=dict(max_drop=5)),
    Row("evaluator-top-k-not-below-classes", EVALUATOR,
        "`metric='top_k_accuracy'` with `top_k=10` on a 10-class model", RUN,
        evaluation.EvaluationError, "`top_k`", "=10", "Use top_k < 10",
        params=dict(metric="top_k_accuracy", top_k=10)),
    Row("evaluator-too-few-examples", EVALUATOR,
        "an eval split of 50 examples (fewer than `min_examples`=100)", RUN,
        NOT_BLESSED, "`min_examples`", "only 50 example(s)",
        "use a larger eval split"),
    Row("evaluator-baseline-blessing-empty", EVALUATOR,
        "`baseline_blessing` wired but resolved to no artifact at run time",
        RUN, NOT_BLESSED, "`baseline_blessing`", "resolved to no blessing",
        "NOT BLESSED because", params=dict(min_examples=10),
        inputs=dict(baseline_blessing=Fixture("empty_channel"))),
    Row("evaluator-baseline-blessing-of-another-model", EVALUATOR,
        "`baseline_blessing` whose `current_model` is not `baseline_model`",
        RUN, NOT_BLESSED, "`baseline_blessing`", "another model",
        "NOT BLESSED because", params=dict(min_examples=10),
        inputs=dict(baseline_blessing=Fixture("other_model_blessing"))),
    Row("evaluator-missing-labels", EVALUATOR,
        "half the eval examples have no label (VarLen label in the schema)",
        RUN, features.DataError, "`label_key`", "have no value",
        "Drop or label those rows", params=dict(min_examples=10),
        inputs=dict(examples=Fixture("missing_label_examples"),
                    schema=Fixture("varlen_label_schema"))),
    Row("evaluator-regression-model", EVALUATOR,
        "a regression model (one unit, MSE loss) gated on accuracy", RUN,
        evaluation.EvaluationError, "`baseline_model`", "regression loss",
        "`output_kind`=",
        inputs=dict(baseline_model=Fixture("regression_model"),
                    candidate_model=Fixture("regression_model"))),
    Row("evaluator-two-outputs", EVALUATOR, "`baseline_model` has two outputs",
        RUN, evaluation.EvaluationError, "`baseline_model`", "2 outputs",
        "Export a model with that one output",
        inputs=dict(baseline_model=Fixture("two_output_model"))),
    Row("evaluator-label-is-a-model-input", EVALUATOR,
        "`label_key` names one of the model's inputs", RUN, features.DataError,
        "`label_key`", "one of the model's inputs",
        "must not take as an input",
        inputs=dict(baseline_model=Fixture("label_input_model"),
                    candidate_model=Fixture("label_input_model"))),
    Row("evaluator-feature-type-differs", EVALUATOR,
        "Examples with float pixels, a schema saying int64", RUN,
        features.DataError, "The feature 'pixel_", "holds float values",
        "Regenerate the schema",
        inputs=dict(examples=Fixture("nan_examples"))),
    Row("pruner-missing-labels", PRUNER,
        "half the train examples have no label (VarLen label in the schema)",
        RUN, features.DataError, "`label_key`", "have no value",
        "Drop or label those rows",
        inputs=dict(examples=Fixture("missing_label_examples"),
                    schema=Fixture("varlen_label_schema"))),
    Row("quantizer-qat-missing-labels", QUANTIZER,
        "`quantization='qat'`, half the train examples have no label (VarLen "
        "label in the schema)", RUN, features.DataError, "`label_key`",
        "have no value", "Drop or label those rows",
        params=dict(quantization="qat", qat_steps=2, batch_size=8),
        inputs=dict(examples=Fixture("missing_label_examples"),
                    schema=Fixture("varlen_label_schema"))),
    # --- add_compression and create_pipeline --------------------------------
    Row("add-compression-nothing-to-do", ADD_COMPRESSION,
        "`sparsity_structure=None, quantization=None`", DEFINITION, ValueError,
        "`sparsity_structure`", "both unset", "Set at least one",
        params=dict(sparsity_structure=None, quantization=None)),
    Row("add-compression-model-of-wrong-type", ADD_COMPRESSION,
        "`model` is an Examples channel", DEFINITION, TypeError, "`model`",
        "Examples", "Wire trainer.outputs['model']",
        params=dict(model=EXAMPLES_CHANNEL)),
    Row("add-compression-unknown-mode", ADD_COMPRESSION,
        "`quantization='int4'`", DEFINITION, ValueError, "`quantization`",
        "'int4'", "Use one of", params=dict(quantization="int4")),
    Row("add-compression-plan-unknown-objective", ADD_COMPRESSION,
        "`plan=True, objective='smallest'`", DEFINITION, ValueError,
        "`objective`", "'smallest'", "'size' picks the fewest raw bytes",
        params=dict(plan=True, objective="smallest")),
    Row("add-compression-plan-unknown-mode", ADD_COMPRESSION,
        "`plan=True`, `quantization_modes='int8,int4'`", DEFINITION,
        ValueError, "`quantization_modes`", "'int4'",
        "Use a comma-separated subset of",
        params=dict(plan=True,
                    planner_kwargs=dict(quantization_modes="int8,int4"))),
    Row("create-pipeline-sparsity-out-of-range", CREATE_PIPELINE,
        "`target_sparsity=1.5`", DEFINITION, ValueError, "`target_sparsity`",
        "1.5", "Use a value such as", params=dict(target_sparsity=1.5)),
    # --- Runners (flags checked before TensorFlow is imported) --------------
    Row("local-runner-unknown-quantization", LOCAL_RUNNER,
        "`--quantization int4`", DEFINITION, EXIT_2, "--quantization", "'int4'",
        "choose from", argv=("--quantization", "int4")),
    Row("local-runner-int8-io-without-int8", LOCAL_RUNNER,
        "`--int8-io int8 --quantization dynamic`", DEFINITION, EXIT_2,
        "--int8-io", "'int8'", "Drop --int8-io or change --quantization",
        argv=("--int8-io", "int8", "--quantization", "dynamic")),
    Row("local-runner-pack-inputs-without-quantizer", LOCAL_RUNNER,
        "`--pack-inputs --quantization none`", DEFINITION, EXIT_2,
        "--pack-inputs", "--quantization none", "Drop --pack-inputs",
        argv=("--pack-inputs", "--quantization", "none")),
    Row("local-runner-plan-unknown-structure", LOCAL_RUNNER,
        "`--plan --plan-structures channels,stripes`", DEFINITION, EXIT_2,
        "--plan-structures", "'stripes'", "give a comma-separated list",
        argv=("--plan", "--plan-structures", "channels,stripes")),
    Row("local-runner-objective-without-plan", LOCAL_RUNNER,
        "`--objective latency` without `--plan`", DEFINITION, EXIT_2,
        "--objective latency", "needs --plan", "add --plan or drop the option",
        argv=("--objective", "latency")),
    Row("local-runner-zero-train-steps", LOCAL_RUNNER, "`--train-steps 0`",
        DEFINITION, EXIT_2, "--train-steps", "0", "must be >= 1",
        argv=("--train-steps", "0")),
    Row("local-runner-max-drop-not-a-number", LOCAL_RUNNER,
        "`--max-drop abc`", DEFINITION, EXIT_2, "--max-drop", "'abc'",
        "see --help", argv=("--max-drop", "abc")),
    Row("local-runner-missing-data-dir", LOCAL_RUNNER,
        "`--data-dir` that does not exist", DEFINITION, EXIT_2, "--data-dir",
        "'/no/such/dir'", "point it at a directory of CSV files",
        argv=("--data-dir", "/no/such/dir")),
    # --- Local runner: bad CSVs in --data-dir, checked before anything runs --
    Row("local-runner-csv-no-label", LOCAL_RUNNER,
        "a CSV in `--data-dir` without a `label` column", DEFINITION, EXIT_2,
        "--data-dir", "no `label` column", "Rename the label column",
        argv=("--data-dir", Prepared("csv_no_label"))),
    Row("local-runner-csv-string-label", LOCAL_RUNNER,
        "a CSV whose label is a word (`seven`)", DEFINITION, EXIT_2,
        "--data-dir", "line 3: `label` is 'seven'",
        "map class names to numbers first",
        argv=("--data-dir", Prepared("csv_string_label"))),
    Row("local-runner-csv-empty-label", LOCAL_RUNNER,
        "a CSV row with an empty label", DEFINITION, EXIT_2, "--data-dir",
        "line 2: `label` is empty", "Fill it in or drop the row",
        argv=("--data-dir", Prepared("csv_empty_label"))),
    Row("local-runner-csv-header-only", LOCAL_RUNNER,
        "a CSV with a header and no rows", DEFINITION, EXIT_2, "--data-dir",
        "has a header and no rows", "add rows or remove the file",
        argv=("--data-dir", Prepared("csv_header_only"))),
    Row("local-runner-csv-ragged-rows", LOCAL_RUNNER,
        "a CSV whose rows have different lengths", DEFINITION, EXIT_2,
        "--data-dir", "line 3: 64 fields, the header has 65",
        "one value per column", argv=("--data-dir", Prepared("csv_ragged"))),
    Row("local-runner-csv-field-too-long", LOCAL_RUNNER,
        "a CSV field over the csv module's limit (131,072 characters)",
        DEFINITION, EXIT_2, "--data-dir", "field larger than field limit",
        "Shorten or remove that field",
        argv=("--data-dir", Prepared("csv_long_field"))),
    Row("local-runner-csv-label-out-of-range", LOCAL_RUNNER,
        "a CSV label outside 0..9 (the Trainer's 10 classes)", DEFINITION,
        EXIT_2, "--data-dir", "`label` is 10, outside 0..9",
        "Fix the label or drop the row",
        argv=("--data-dir", Prepared("csv_label_10"))),
    Row("local-runner-csv-byte-order-mark", LOCAL_RUNNER,
        "a CSV starting with a UTF-8 byte-order mark", DEFINITION, EXIT_2,
        "--data-dir", "starts with a UTF-8 byte-order mark",
        "save it as UTF-8 without BOM",
        argv=("--data-dir", Prepared("csv_bom"))),
    # --- Local runner: options and the push destination ---------------------
    Row("local-runner-empty-pipeline-name", LOCAL_RUNNER,
        "`--pipeline-name ''`", DEFINITION, EXIT_2, "--pipeline-name", "''",
        "e.g. digits_compression", argv=("--pipeline-name", "")),
    Row("local-runner-empty-output-dir", LOCAL_RUNNER, "`--output-dir ''`",
        DEFINITION, EXIT_2, "--output-dir", "''", "give a directory",
        argv=("--output-dir", "")),
    Row("local-runner-train-steps-too-large", LOCAL_RUNNER,
        "`--train-steps 3000000000` (over 32 bits)", DEFINITION, EXIT_2,
        "--train-steps", "3000000000", "at most 2,147,483,647",
        argv=("--train-steps", "3000000000")),
    Row("local-runner-search-sparsities-empty", LOCAL_RUNNER,
        "`--search-sparsities ','`", DEFINITION, EXIT_2,
        "--search-sparsities", "','", "comma-separated numbers in [0, 1)",
        argv=("--search-sparsities", ",")),
    Row("local-runner-push-destination-not-writable", LOCAL_RUNNER,
        "`<output-dir>/serving_model` (the push destination) is a file",
        DEFINITION, EXIT_2, "push destination", "is a file",
        "choose another --output-dir",
        argv=("--output-dir", Prepared("serving_model_is_a_file"))),
    Row("kubeflow-runner-untagged-image", KUBEFLOW_RUNNER,
        "`--image` without a tag", DEFINITION, EXIT_2, "--image",
        "'tfx-compression'", "name a fixed version",
        argv=("--image", "tfx-compression")),
    Row("kubeflow-runner-missing-pipeline-root", KUBEFLOW_RUNNER,
        "no `--pipeline-root`", DEFINITION, EXIT_2, "--pipeline-root",
        "is missing", "gs://my-bucket", argv=("--pipeline-root", "")),
    Row("kubeflow-runner-bad-pipeline-name", KUBEFLOW_RUNNER,
        "`--pipeline-name My_Pipeline`", DEFINITION, EXIT_2, "--pipeline-name",
        "'My_Pipeline'", "use lowercase letters",
        argv=("--pipeline-name", "My_Pipeline")),
    Row("kubeflow-runner-output-not-json", KUBEFLOW_RUNNER,
        "`--output spec.yaml`", DEFINITION, EXIT_2, "--output", "spec.yaml",
        "must end with .json", argv=("--output", "spec.yaml")),
    # --- Pruner distillation (#20), when the pipeline is defined ------------
    Row("pruner-distillation-weight-out-of-range", PRUNER,
        "`distillation_weight=1.5`", DEFINITION, ValueError,
        "`distillation_weight`", "1.5", "0 to turn distillation off",
        params=dict(distillation_weight=1.5)),
    Row("pruner-distillation-temperature-zero", PRUNER,
        "`distillation_temperature=0`", DEFINITION, ValueError,
        "`distillation_temperature`", "0.0", "Use e.g. 2.0",
        params=dict(distillation_temperature=0.0)),
    Row("quantizer-distillation-weight-out-of-range", QUANTIZER,
        "`distillation_weight=1.5` with `quantization='qat'`", DEFINITION,
        ValueError, "`distillation_weight`", "1.5",
        "0 to turn distillation off",
        params=dict(quantization="qat", distillation_weight=1.5)),
    Row("quantizer-distillation-without-qat", QUANTIZER,
        "`distillation_weight=0.5` with `quantization='int8'`", DEFINITION,
        ValueError, "`distillation_weight`", "quantization='int8' trains "
        "nothing", "use quantization='qat'",
        params=dict(quantization="int8", distillation_weight=0.5)),
    Row("local-runner-distillation-weight-out-of-range", LOCAL_RUNNER,
        "`--distillation-weight 2`", DEFINITION, EXIT_2,
        "`distillation_weight`", "2.0", "0 to turn distillation off",
        argv=("--distillation-weight", "2")),
)


# ---------------------------------------------------------------------------
# Artifacts for the run rows (made once, only when a row asks for them).
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture(scope="module")
def small_examples(bad_root):
  """150 digits (100 train, 50 eval): the evaluator's Beam run stays short."""
  return fixtures.write_examples(os.path.join(bad_root, "small"), limit=150)


@pytest.fixture(scope="module")
def empty_train_examples(bad_root):
  return fixtures.write_examples(os.path.join(bad_root, "empty_train"), splits={
      "train": slice(0, 0), "eval": slice(0, 50)})


@pytest.fixture(scope="module")
def empty_eval_examples(bad_root):
  return fixtures.write_examples(os.path.join(bad_root, "empty_eval"), splits={
      "train": slice(0, 50), "eval": slice(0, 0)})


@pytest.fixture(scope="module")
def float_schema(bad_root):
  """Pixels as float features, as a CSV with missing values gives them."""
  spec = {k: tf.io.FixedLenFeature([1], tf.float32) for k in fixtures.FEATURES}
  spec[fixtures.LABEL] = tf.io.FixedLenFeature([1], tf.int64)
  art = standard_artifacts.Schema()
  art.uri = os.path.join(bad_root, "float_schema")
  os.makedirs(art.uri)
  io_utils.write_pbtxt_file(os.path.join(art.uri, "schema.pbtxt"),
                            schema_utils.schema_from_feature_spec(spec))
  return art


@pytest.fixture(scope="module")
def nan_examples(bad_root):
  """Digits whose first pixel is NaN in every example (a broken column)."""
  x, y = fixtures.digits_arrays()
  x = x[:96].astype(np.float32)
  x[:, 0] = np.nan
  art = standard_artifacts.Examples()
  art.uri = os.path.join(bad_root, "nan_examples")
  art.split_names = '["train", "eval"]'
  for split, rows in (("train", slice(0, 64)), ("eval", slice(64, 96))):
    d = os.path.join(art.uri, f"Split-{split}")
    os.makedirs(d)
    with tf.io.TFRecordWriter(os.path.join(d, "data.gz"), options="GZIP") as w:
      for pixels, label in zip(x[rows], y[rows]):
        feats = {k: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                 for k, v in zip(fixtures.FEATURES, pixels)}
        feats[fixtures.LABEL] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(label)]))
        w.write(tf.train.Example(features=tf.train.Features(
            feature=feats)).SerializeToString())
  return art


def _model_artifact(root: str, name: str) -> standard_artifacts.Model:
  art = standard_artifacts.Model()
  art.uri = os.path.join(root, name)
  return art


def _copy_model(model_artifact, root: str, name: str) -> standard_artifacts.Model:
  art = _model_artifact(root, name)
  shutil.copytree(model_artifact.uri, art.uri)
  return art


@pytest.fixture(scope="module")
def tflite_model(bad_root):
  """A real TFLite flatbuffer (of a tiny model) in the Quantizer's layout."""
  inp = keras.Input(shape=(1,), name="pixel_00")
  tiny = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(inp))
  content = tf.lite.TFLiteConverter.from_keras_model(tiny).convert()
  art = _model_artifact(bad_root, "tflite_model")
  serving = os.path.join(art.uri, model_io.SERVING_DIR)
  os.makedirs(serving)
  with open(os.path.join(serving, model_io.TFLITE_FILENAME), "wb") as f:
    f.write(content)
  return art


@pytest.fixture(scope="module")
def garbage_tflite_model(bad_root):
  art = _model_artifact(bad_root, "garbage_tflite_model")
  serving = os.path.join(art.uri, model_io.SERVING_DIR)
  os.makedirs(serving)
  with open(os.path.join(serving, model_io.TFLITE_FILENAME), "wb") as f:
    f.write(b"this is not a flatbuffer" * 8)
  return art


@pytest.fixture(scope="module")
def plain_savedmodel(bad_root):
  """A SavedModel with a serving signature but no Keras metadata."""

  class Module(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, examples):
      return {"out": tf.strings.length(examples)}

  art = _model_artifact(bad_root, "plain_savedmodel")
  module = Module()
  tf.saved_model.save(module, os.path.join(art.uri, model_io.SERVING_DIR),
                      signatures={"serving_default": module.serve})
  return art


def _write_keras3_model(art, keras_file: bool):
  """As a Keras 3 Trainer module writes it: tf.saved_model.save (+ model.keras)."""
  import keras  # pylint: disable=g-import-not-at-top
  inputs = {k: keras.Input(shape=(1,), name=k) for k in digits_trainer.FEATURE_KEYS}
  x = keras.layers.Concatenate()(list(inputs.values()))
  model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
  model.compile(loss="sparse_categorical_crossentropy")
  path = os.path.join(art.uri, model_io.SERVING_DIR)
  tf.saved_model.save(model, path)
  if keras_file:
    model.save(os.path.join(path, model_io.KERAS_FILENAME))
  return art


@pytest.fixture(scope="module")
def keras3_savedmodel_only(bad_root):
  return _write_keras3_model(_model_artifact(bad_root, "keras3_savedmodel_only"),
                             keras_file=False)


@pytest.fixture(scope="module")
def keras3_model(bad_root):
  return _write_keras3_model(_model_artifact(bad_root, "keras3_model"),
                             keras_file=True)


@pytest.fixture(scope="module")
def empty_model(bad_root):
  art = _model_artifact(bad_root, "empty_model")
  os.makedirs(art.uri)
  return art


@pytest.fixture(scope="module")
def truncated_model(model_artifact, bad_root):
  art = _copy_model(model_artifact, bad_root, "truncated_model")
  path = os.path.join(art.uri, model_io.SERVING_DIR, "saved_model.pb")
  with open(path, "rb") as f:
    head = f.read(200)
  with open(path, "wb") as f:
    f.write(head)
  return art


@pytest.fixture(scope="module")
def garbage_variables_model(model_artifact, bad_root):
  art = _copy_model(model_artifact, bad_root, "garbage_variables_model")
  variables = os.path.join(art.uri, model_io.SERVING_DIR, "variables")
  for name in os.listdir(variables):
    if name.startswith("variables.data"):
      path = os.path.join(variables, name)
      size = os.path.getsize(path)
      with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(size))
  return art


@pytest.fixture(scope="module")
def nan_model(trained_model, bad_root):
  """The trained CNN with a NaN output bias: every prediction is NaN."""
  model = keras.models.clone_model(trained_model)
  weights = trained_model.get_weights()
  weights[-1] = np.full_like(weights[-1], np.nan)
  model.set_weights(weights)
  return fixtures.save_trainer_model(model, bad_root, "nan_model")


@pytest.fixture(scope="module")
def custom_layer_model(bad_root):
  """A model with a custom layer (its class in a user module file)."""
  module = test_safe_loading.write_custom_layer_module(bad_root)
  return test_safe_loading.save_custom_layer_model(bad_root, module)


@pytest.fixture(scope="module")
def empty_module_file(bad_root):
  path = os.path.join(bad_root, "empty_module.py")
  with open(path, "w") as f:
    f.write("UNRELATED = 1\n")
  return path


# --- Issue 17: models and data that do not fit, blessings that do not vouch --


@pytest.fixture(scope="module")
def empty_channel():
  """What a wired channel resolves to when its producer was skipped."""
  return []


@pytest.fixture(scope="module")
def other_model_blessing(bad_root):
  art = standard_artifacts.ModelBlessing()
  art.uri = os.path.join(bad_root, "other_model_blessing")
  art.set_int_custom_property("blessed", 1)
  art.set_string_custom_property("current_model", "/elsewhere/model")
  return art


@pytest.fixture(scope="module")
def _missing_label_data(bad_root):
  from tests.components import test_compression_evaluator_executor as t  # pylint: disable=g-import-not-at-top
  return t.missing_label_examples(bad_root)


@pytest.fixture(scope="module")
def missing_label_examples(_missing_label_data):
  return _missing_label_data[0]


@pytest.fixture(scope="module")
def varlen_label_schema(_missing_label_data):
  return _missing_label_data[1]


def _digits_inputs(extra=()):
  return {k: keras.Input(shape=(1,), name=k)
          for k in list(fixtures.FEATURES) + list(extra)}


def _save_plain(model, root, name):
  art = _model_artifact(root, name)
  model.save(os.path.join(art.uri, model_io.SERVING_DIR), save_format="tf")
  return art


@pytest.fixture(scope="module")
def regression_model(bad_root):
  inputs = _digits_inputs()
  out = keras.layers.Dense(1)(keras.layers.Concatenate()(list(inputs.values())))
  model = keras.Model(inputs, out)
  model.compile(loss="mean_squared_error")
  return _save_plain(model, bad_root, "regression_model")


@pytest.fixture(scope="module")
def two_output_model(bad_root):
  inputs = _digits_inputs()
  x = keras.layers.Concatenate()(list(inputs.values()))
  model = keras.Model(inputs, [
      keras.layers.Dense(10, activation="softmax", name="digit")(x),
      keras.layers.Dense(1, name="ink")(x)])
  return _save_plain(model, bad_root, "two_output_model")


@pytest.fixture(scope="module")
def label_input_model(bad_root):
  inputs = _digits_inputs(extra=[fixtures.LABEL])
  x = keras.layers.Concatenate()(list(inputs.values()))
  model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
  return _save_plain(model, bad_root, "label_input_model")


def _csv_dir(tmp_path, text: str = "", raw: bytes = b"") -> str:
  """A --data-dir holding one CSV with the digits' header (unless ``raw``)."""
  d = tmp_path / "data"
  d.mkdir()
  header = ",".join(fixtures.FEATURES + [fixtures.LABEL]) + "\n"
  (d / "digits.csv").write_bytes(raw or (header + text).encode())
  return str(d)


def _row(label: str, value: str = "0", width: int = 64) -> str:
  return ",".join([value] * width + [label]) + "\n"


def _serving_model_is_a_file(tmp_path) -> str:
  out = tmp_path / "existing_out"
  out.mkdir()
  (out / "serving_model").write_text("not a directory")
  return str(out)


PREPARED = {
    "csv_no_label": lambda t: _csv_dir(t, raw=(
        ",".join(fixtures.FEATURES + ["digit"]) + "\n" + _row("3")).encode()),
    "csv_string_label": lambda t: _csv_dir(t, _row("1") + _row("seven")),
    "csv_empty_label": lambda t: _csv_dir(t, _row("")),
    "csv_header_only": lambda t: _csv_dir(t, ""),
    "csv_ragged": lambda t: _csv_dir(t, _row("1") + _row("2", width=63)),
    "csv_long_field": lambda t: _csv_dir(t, _row("1") + _row("2", "9" * 140000)),
    "csv_label_10": lambda t: _csv_dir(t, _row("9") + _row("10")),
    "csv_bom": lambda t: _csv_dir(t, raw=b"\xef\xbb\xbf" + (
        ",".join(fixtures.FEATURES + [fixtures.LABEL]) + "\n" + _row("1")).encode()),
    "serving_model_is_a_file": _serving_model_is_a_file,
}


def _tree(path) -> Dict[str, int]:
  """Every file under ``path`` and its size: what a run wrote shows as a difference."""
  return {os.path.join(r, f): os.path.getsize(os.path.join(r, f))
          for r, _, files in os.walk(path) for f in files}


# ---------------------------------------------------------------------------
# Running a row.
# ---------------------------------------------------------------------------


def _resolve(request, values: Dict[str, Any]) -> Dict[str, Any]:
  return {k: request.getfixturevalue(v) if isinstance(v, Fixture) else v
          for k, v in values.items()}


def _define(row: Row, request) -> None:
  """Builds the component, helper or pipeline with the row's parameters."""
  params = _resolve(request, row.params)
  channels = dict(examples=_channel(standard_artifacts.Examples),
                  schema=_channel(standard_artifacts.Schema))
  if row.where == PRUNER:
    args = dict(model=_channel(standard_artifacts.Model), label_key="label",
                **channels)
    tfx_compression.Pruner(**{**args, **params})
  elif row.where == QUANTIZER:
    args = dict(model=_channel(standard_artifacts.Model), label_key="label",
                **channels)
    tfx_compression.Quantizer(**{**args, **params})
  elif row.where == EVALUATOR:
    args = dict(baseline_model=_channel(standard_artifacts.Model),
                candidate_model=_channel(standard_artifacts.Model),
                label_key="label", max_drop=0.01, **channels)
    tfx_compression.CompressionEvaluator(**{**args, **params})
  elif row.where == ADD_COMPRESSION:
    args = dict(model=_channel(standard_artifacts.Model), label_key="label",
                push_destination=os.path.join(str(request.getfixturevalue(
                    "tmp_path")), "serving"), **channels)
    tfx_compression.add_compression(**{**args, **params})
  elif row.where == CREATE_PIPELINE:
    from tfx_compression.pipelines import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
    tmp = str(request.getfixturevalue("tmp_path"))
    args = dict(pipeline_name="bad-inputs", pipeline_root=os.path.join(tmp, "root"),
                data_root=os.path.join(tmp, "data"),
                serving_model_dir=os.path.join(tmp, "serving"))
    pipeline_lib.create_pipeline(**{**args, **params})
  else:
    raise AssertionError(f"no definition for {row.where}")


def _outputs_written(paths) -> list:
  return [os.path.join(root, f) for p in paths if os.path.exists(p)
          for root, _, files in os.walk(p) for f in files]


def _run(row: Row, request, tmp_path) -> Optional[str]:
  """Executor().Do on the row's artifacts; returns the verdict if it blessed or not.

  Outputs live under ``tmp_path``; after a failure the caller checks that
  nothing that looks finished was written there.
  """
  params = _resolve(request, row.params)
  overrides = _resolve(request, {k: v for k, v in row.inputs.items()
                                 if v is not None})
  left_out = {k for k, v in row.inputs.items() if v is None}

  def inputs(defaults: Dict[str, str]) -> Dict[str, list]:
    out = {}
    for key, fixture in defaults.items():
      if key in left_out:
        continue
      out[key] = [overrides.get(key) or request.getfixturevalue(fixture)]
    for key, value in overrides.items():
      out[key] = value if isinstance(value, list) else [value]
    return out

  if row.where == PRUNER:
    pruned = _model_artifact(str(tmp_path), "pruned_model")
    run = standard_artifacts.ModelRun()
    run.uri = str(tmp_path / "model_run")
    props = dict(label_key="label", train_steps=4, batch_size=8,
                 eval_split="")
    props.update(params)
    pruner_executor.Executor().Do(
        inputs(dict(model="model_artifact", examples="examples_artifact",
                    schema="schema_artifact")),
        {"pruned_model": [pruned], "model_run": [run]}, props)
    return None
  if row.where == QUANTIZER:
    quantized = _model_artifact(str(tmp_path), "quantized_model")
    os.makedirs(quantized.uri)  # the orchestrator creates output directories
    props = dict(quantization="dynamic", label_key="label",
                 num_representative_samples=8)
    props.update(params)
    quantizer_executor.Executor().Do(
        inputs(dict(model="model_artifact", examples="examples_artifact",
                    schema="schema_artifact")),
        {"quantized_model": [quantized]}, props)
    return None
  if row.where == EVALUATOR:
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    report = standard_artifacts.ModelEvaluation()
    report.uri = str(tmp_path / "evaluation")
    os.makedirs(blessing.uri)
    props = dict(label_key="label", max_drop=0.01, latency_samples=0)
    props.update(params)
    evaluator_executor.Executor().Do(
        inputs(dict(baseline_model="model_artifact",
                    candidate_model="model_artifact",
                    examples="small_examples", schema="schema_artifact")),
        {"blessing": [blessing], "evaluation": [report]}, props)
    assert os.listdir(blessing.uri) in (["BLESSED"], ["NOT_BLESSED"])
    verdict = blessing.get_string_custom_property("reason")
    return ("NOT_BLESSED" if os.listdir(blessing.uri) == ["NOT_BLESSED"]
            else "BLESSED") + ": " + verdict
  raise AssertionError(f"no executor for {row.where}")


def _runner(row: Row, tmp_path) -> Tuple[subprocess.CompletedProcess,
                                         Dict[str, int]]:
  """The runner's result, and the files under ``tmp_path`` just before it ran."""
  out = tmp_path / "out"
  if row.where == LOCAL_RUNNER:
    argv = ["-m", "tfx_compression.pipelines.local_runner", "--output-dir", str(out)]
  else:
    argv = ["-m", "tfx_compression.pipelines.kubeflow_runner",
            "--image", "gcr.io/p/tfx-compression:0.1.0",
            "--pipeline-root", "gs://bucket/root", "--data-root", "gs://bucket/data",
            "--output", str(out / "spec.json")]
  # Later flags win in argparse: the row's bad value replaces the good one.
  args = [PREPARED[a](tmp_path) if isinstance(a, Prepared) else a
          for a in row.argv]
  before = _tree(tmp_path)
  proc = subprocess.run([sys.executable, *argv, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  return proc, before


def _check_message(row: Row, message: str) -> None:
  for what in ("name", "value", "hint"):
    needle = getattr(row, what)
    assert needle in message, (
        f"{row.id}: the message does not contain the {what} {needle!r}:\n"
        f"{message}")


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_bad_input(row: Row, request, tmp_path):
  if row.where in (LOCAL_RUNNER, KUBEFLOW_RUNNER):
    proc, before = _runner(row, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    _check_message(row, errors[0])
    assert not (tmp_path / "out").exists()
    assert _tree(tmp_path) == before, "a refused run wrote files"
    return

  if row.stage == DEFINITION:
    with pytest.raises(row.expect) as info:
      _define(row, request)
    _check_message(row, str(info.value))
    return

  if row.expect == NOT_BLESSED:
    verdict = _run(row, request, tmp_path)
    assert verdict.startswith("NOT_BLESSED: "), verdict
    _check_message(row, verdict)
    return
  with pytest.raises(row.expect) as info:
    _run(row, request, tmp_path)
  _check_message(row, str(info.value))
  # Nothing that looks finished: no model, no blessing.
  written = _outputs_written([tmp_path / "pruned_model", tmp_path / "model_run",
                              tmp_path / "quantized_model",
                              tmp_path / "blessing"])
  assert not written, f"{row.id} failed but wrote {written}"


def test_table_is_well_formed():
  ids = [r.id for r in TABLE]
  assert len(ids) == len(set(ids)), "row ids must be unique"
  assert len(TABLE) >= 25
  for r in TABLE:
    assert r.stage in (DEFINITION, RUN), r.id
    assert r.name and r.value and r.hint, r.id
    if r.stage == RUN:
      assert r.where in (PRUNER, QUANTIZER, EVALUATOR), r.id
  # The three components, both stages, the helpers and both runners.
  assert {(r.where, r.stage) for r in TABLE} >= {
      (PRUNER, DEFINITION), (PRUNER, RUN), (QUANTIZER, DEFINITION),
      (QUANTIZER, RUN), (EVALUATOR, DEFINITION), (EVALUATOR, RUN),
      (ADD_COMPRESSION, DEFINITION), (LOCAL_RUNNER, DEFINITION),
      (KUBEFLOW_RUNNER, DEFINITION)}


def markdown_table() -> str:
  """The docs' table: id, where, the bad input, what happens."""
  stages = {DEFINITION: "when the pipeline is defined", RUN: "at run time"}
  lines = ["| id | where | bad input | what happens |", "|---|---|---|---|"]
  for r in TABLE:
    when = ("before anything runs" if r.expect == EXIT_2 else
            stages[r.stage])
    lines.append(
        f"| `{r.id}` | {r.where} | {r.bad_input} | {r.outcome} {when}: "
        f"names `{r.name.strip('`')}`, shows `{r.value}`, says "
        f"\u201c{r.hint}\u201d |")
  return "\n".join(lines)


def test_docs_list_every_row():
  with open(DOCS, encoding="utf-8") as f:
    docs = f.read()
  missing = [r.id for r in TABLE if f"`{r.id}`" not in docs]
  assert not missing, (f"docs/bad_inputs.md lacks rows {missing}; regenerate "
                       "its table with `python -m tests.test_bad_inputs`.")
  import re  # pylint: disable=g-import-not-at-top
  listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", docs, flags=re.M))
  stale = sorted(listed - {r.id for r in TABLE})
  assert not stale, f"docs/bad_inputs.md lists rows no test runs: {stale}"


if __name__ == "__main__":
  print(markdown_table())
