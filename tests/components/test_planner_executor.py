"""The CompressionPlanner executor on a tiny digits model: layout, properties, plan.json."""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from tfx_compression.components.common import model_io
from tfx_compression.components.common import side_files
from tfx_compression.components.compression_planner import component
from tfx_compression.components.compression_planner import executor
from tests import fixtures


@pytest.fixture(scope="module")
def tiny_digits_artifact(tmp_path_factory):
  """64 named pixel inputs -> Concatenate -> Dense 8 -> softmax 10, trained
  briefly, saved as the demo Trainer saves (packable: one Concatenate)."""
  model = fixtures.tiny_features_model(names=fixtures.FEATURES, classes=10,
                                       output_name="probabilities")
  model.compile("adam", "sparse_categorical_crossentropy")
  x, y = fixtures.digits_arrays()
  n = 2 * len(y) // 3
  feats = {k: x[:n, i:i + 1].astype(np.float32) / 16.0
           for i, k in enumerate(fixtures.FEATURES)}
  ds = tf.data.Dataset.from_tensor_slices((feats, y[:n])).repeat().batch(64)
  model.fit(ds, steps_per_epoch=300, verbose=0)
  return fixtures.save_trainer_model(model, str(tmp_path_factory.mktemp("m")))


@pytest.fixture(scope="module")
def planned(tiny_digits_artifact, examples_artifact, schema_artifact,
            tmp_path_factory):
  out = standard_artifacts.Model()
  out.uri = str(tmp_path_factory.mktemp("plan") / "compressed_model")
  props = dict(label_key="label", structures="channels", sparsities="0.25",
               search_steps=10, finetune_steps=2, quantization_modes="int8,none",
               latency_samples=5, max_drop=0.2, num_representative_samples=32,
               # 'latency': the SavedModel candidate is exported and timed too
               # (with 'size' a passing TFLite of the same model skips it).
               objective="latency")
  executor.Executor().Do(
      {executor.MODEL_KEY: [tiny_digits_artifact],
       executor.EXAMPLES_KEY: [examples_artifact],
       executor.SCHEMA_KEY: [schema_artifact]},
      {executor.COMPRESSED_MODEL_KEY: [out]}, props)
  return out


def test_the_chosen_model_is_written_in_the_quantizers_layout(planned):
  serving = model_io.serving_dir(planned.uri)
  assert sorted(os.listdir(serving)) == ["model.tflite", "tflite_io.json"]
  assert sorted(os.listdir(planned.uri)) == ["Format-Serving", "plan.json"]
  plan = side_files.read_plan(planned.uri)
  chosen = plan["candidates"][plan["chosen_index"]]
  assert chosen["passed"] and chosen["kind"] == "tflite"
  with open(os.path.join(serving, "model.tflite"), "rb") as f:
    content = f.read()
  assert hashlib.sha256(content).hexdigest() == chosen["sha256"]
  assert len(content) == chosen["raw_bytes"]
  # The pack applies (one Concatenate): one input, as tflite_io.json says.
  with open(os.path.join(serving, "tflite_io.json")) as f:
    io = json.load(f)
  assert chosen["packed"] and io["packed"]["input"]


def test_plan_json_lists_every_candidate_with_its_figures(planned):
  plan = side_files.read_plan(planned.uri)
  modes = {(c["structure"], c["mode"]) for c in plan["candidates"]}
  assert ("none", "int8") in modes  # quantization alone is a candidate
  assert {("channels", "int8"), ("channels", "none")} <= modes
  for c in plan["candidates"]:
    assert c["raw_bytes"] > 0 and c["gzip_bytes"] > 0
    assert c["latency_us"] > 0  # the SavedModels' too (one subprocess)
    assert c["passed"] == (c["why_not"] is None)
  assert plan["baseline"]["float_tflite_bytes"] > 0
  assert plan["objective"] == "latency" and plan["metric_name"] == "accuracy"
  best = min(c["latency_us"] for c in plan["candidates"] if c["passed"])
  assert plan["candidates"][plan["chosen_index"]]["latency_us"] == best


def test_the_plan_is_in_ml_metadata_properties(planned):
  plan = side_files.read_plan(planned.uri)
  chosen = plan["candidates"][plan["chosen_index"]]
  get = planned.get_custom_property
  assert get("plan_structure") == chosen["structure"]
  assert get("plan_mode") == chosen["mode"] == get("quantization")
  assert get("plan_sparsity") == pytest.approx(chosen["sparsity"])
  assert get("plan_objective") == "latency"
  assert get("plan_candidates") == len(plan["candidates"])
  assert get("plan_sha256") == chosen["sha256"]
  assert get("plan_chosen_metric") == pytest.approx(chosen["metric"])


def test_component_refuses_bad_parameters_when_defined(
    tiny_digits_artifact):
  from tfx import types  # pylint: disable=g-import-not-at-top
  model = types.Channel(type=standard_artifacts.Model)
  examples = types.Channel(type=standard_artifacts.Examples)
  schema = types.Channel(type=standard_artifacts.Schema)
  with pytest.raises(ValueError, match=r"`objective`='smallest' is not one"):
    component.CompressionPlanner(model=model, examples=examples, schema=schema,
                                 label_key="label", max_drop=0.01,
                                 objective="smallest")
  with pytest.raises(ValueError, match=r"`label_key` is not set"):
    component.CompressionPlanner(model=model, examples=examples, schema=schema,
                                 max_drop=0.01)
  planner = component.CompressionPlanner(
      model=model, examples=examples, schema=schema, label_key="label",
      max_drop=0.01, quantization_modes=["int8", "float16"])
  assert planner.exec_properties["quantization_modes"] == "int8,float16"
  assert "compressed_model" in planner.outputs
