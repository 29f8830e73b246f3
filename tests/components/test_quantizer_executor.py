"""Quantizer: Executor().Do on artifacts under tmp_path, and the component's checks."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tfx.orchestration import data_types
from tfx.types import channel_utils
from tfx.types import standard_artifacts

from tfx_compression import Quantizer
from tfx_compression.components.common import artifacts
from tfx_compression.components.common import features
from tfx_compression.components.common import model_io
from tfx_compression.components.quantizer import executor as executor_lib
from tfx_compression.components.quantizer import quantization
from tests import fixtures


def output_model(tmp_path, name="quantized"):
  art = standard_artifacts.Model()
  art.uri = str(tmp_path / name)
  os.makedirs(art.uri)  # TFX creates the output directory before Do.
  return art


def run(model_artifact, output, examples=None, schema=None, **props):
  inputs = {executor_lib.MODEL_KEY: [model_artifact]}
  if examples is not None:
    inputs[executor_lib.EXAMPLES_KEY] = [examples]
  if schema is not None:
    inputs[executor_lib.SCHEMA_KEY] = [schema]
  executor_lib.Executor().Do(
      inputs, {executor_lib.QUANTIZED_MODEL_KEY: [output]}, props)


def eval_accuracy(tflite_path, io, n=200) -> float:
  """Feeds the TFLite model raw eval examples decoded by the shared decoder."""
  interpreter = tf.lite.Interpreter(model_path=tflite_path, num_threads=1)
  runner = interpreter.get_signature_runner(io["signature_key"])
  specs = {i["name"]: tf.TensorSpec([None, 1], tf.float32)
           for i in io["inputs"]}
  decoder = features.ExampleDecoder(fixtures.schema_proto(), io["label_key"],
                                    specs)
  feats, labels = decoder.decode(tf.constant(fixtures.serialized_eval_examples(n)))
  (out,) = io["outputs"]
  correct = 0
  for row in range(n):
    probs = runner(**{k: v[row:row + 1].numpy() for k, v in feats.items()})
    correct += int(np.argmax(probs[out["name"]]) == labels[row].numpy())
  return correct / n


def test_int8_writes_tflite_io_and_properties(tmp_path, model_artifact,
                                              examples_artifact, schema_artifact):
  # A Pruner search output: the evaluator reaches its curve through lineage.
  source = standard_artifacts.Model()
  source.uri = str(tmp_path / "pruned")
  shutil.copytree(model_artifact.uri, source.uri)
  search = {"points": [{"sparsity": 0.5, "accuracy": 0.9}]}
  with open(os.path.join(source.uri, "pruning_search.json"), "w") as f:
    json.dump(search, f)
  output = output_model(tmp_path)

  run(source, output, examples_artifact, schema_artifact,
      quantization="int8", label_key="label", num_representative_samples=50)

  serving = os.path.join(output.uri, "Format-Serving")
  assert sorted(os.listdir(serving)) == ["model.tflite", "tflite_io.json"]
  tflite_path = os.path.join(serving, "model.tflite")
  assert model_io.model_kind(serving) == "tflite"
  with open(os.path.join(serving, "tflite_io.json")) as f:
    io = json.load(f)
  assert io["mode"] == "int8" and io["preprocessing"] == "none"
  assert io["label_key"] == "label" and io["signature_key"] == "serving_default"
  assert io["batch_size"] == 1
  assert sorted(i["name"] for i in io["inputs"]) == fixtures.FEATURES
  # Inputs are listed in the interpreter's order, which a device indexes.
  interpreter = tf.lite.Interpreter(model_path=tflite_path)
  assert [i["index"] for i in io["inputs"]] == [
      d["index"] for d in interpreter.get_input_details()]
  # The curve stays with the Pruner's artifact; the output names its source.
  assert not os.path.exists(os.path.join(output.uri, "pruning_search.json"))
  assert output.get_string_custom_property("source_model") == source.uri

  props = output.mlmd_artifact.custom_properties
  assert props["quantization"].string_value == "int8"
  assert props["tflite_bytes"].int_value == os.path.getsize(tflite_path)
  assert 0 < props["tflite_gzip_bytes"].int_value < props[
      "tflite_bytes"].int_value
  assert props["float_tflite_bytes"].int_value > 3 * props[
      "tflite_bytes"].int_value
  assert props["input_sparsity"].double_value == pytest.approx(0.0, abs=1e-3)
  assert 0.0 <= props["sparsity"].double_value < 0.02
  assert props["representative_samples"].int_value == 50
  assert eval_accuracy(tflite_path, io) > 0.8


def test_dynamic_needs_no_examples(tmp_path, model_artifact):
  output = output_model(tmp_path)
  run(model_artifact, output, quantization="dynamic")
  serving = os.path.join(output.uri, "Format-Serving")
  with open(os.path.join(serving, "tflite_io.json")) as f:
    io = json.load(f)
  assert io["mode"] == "dynamic" and io["label_key"] is None
  assert not os.path.exists(os.path.join(output.uri, "pruning_search.json"))
  io["label_key"] = "label"
  assert eval_accuracy(os.path.join(serving, "model.tflite"), io) > 0.8


def test_int8_without_examples_names_them(tmp_path, model_artifact):
  output = output_model(tmp_path)
  with pytest.raises(ValueError, match="`examples` is not set"):
    run(model_artifact, output, quantization="int8", label_key="label")
  assert os.listdir(output.uri) == []


def test_unknown_split(tmp_path, model_artifact, examples_artifact,
                       schema_artifact):
  output = output_model(tmp_path)
  with pytest.raises(ValueError, match="`train_split`.*'training'"):
    run(model_artifact, output, examples_artifact, schema_artifact,
        quantization="int16x8", train_split="training")


def test_failure_while_writing_leaves_no_model(tmp_path, model_artifact,
                                               monkeypatch):
  output = output_model(tmp_path)
  # The conversion itself is covered above; a canned result keeps this fast.
  canned = quantization.QuantizationResult(
      tflite_model=b"TFL3-canned", io={}, stats={"quantization": "float16"})
  monkeypatch.setattr(quantization, "quantize", lambda *a, **k: canned)

  def broken_write_json(path, payload):
    raise OSError("disk full")

  monkeypatch.setattr(artifacts, "write_json", broken_write_json)
  with pytest.raises(OSError, match="disk full"):
    run(model_artifact, output, quantization="float16")
  found = [f for _, _, files in os.walk(output.uri) for f in files]
  assert "model.tflite" not in found


def test_tflite_input_is_refused(tmp_path, model_artifact):
  tflite = output_model(tmp_path, "tflite")
  os.makedirs(os.path.join(tflite.uri, "Format-Serving"))
  with open(os.path.join(tflite.uri, "Format-Serving", "model.tflite"),
            "wb") as f:
    f.write(b"TFL3")
  output = output_model(tmp_path, "second")
  with pytest.raises(model_io.ModelLoadError, match="`model`.*already a TFLite"):
    run(tflite, output, quantization="dynamic")
  assert os.listdir(output.uri) == []


def test_module_file_without_custom_objects(tmp_path, model_artifact):
  module = tmp_path / "module.py"
  module.write_text("input_fn = None\n")
  with pytest.raises(ValueError, match="`module_file`.*custom_objects"):
    run(model_artifact, output_model(tmp_path), quantization="dynamic",
        module_file=str(module))


def test_qat_distills_from_the_input_model(tmp_path, model_artifact,
                                           examples_artifact, schema_artifact):
  output = output_model(tmp_path)
  run(model_artifact, output, examples_artifact, schema_artifact,
      quantization="qat", label_key="label", qat_steps=2, batch_size=8,
      num_representative_samples=8, distillation_weight=0.5,
      distillation_temperature=3.0)
  props = output.mlmd_artifact.custom_properties
  assert props["qat_distillation_weight"].double_value == 0.5
  assert props["qat_distillation_temperature"].double_value == 3.0
  assert np.isfinite(props["qat_final_loss"].double_value)
  assert os.path.exists(os.path.join(output.uri, "Format-Serving",
                                     "model.tflite"))


class TestComponent:

  def channels(self):
    return dict(
        model=channel_utils.as_channel([standard_artifacts.Model()]),
        examples=channel_utils.as_channel([standard_artifacts.Examples()]),
        schema=channel_utils.as_channel([standard_artifacts.Schema()]))

  def test_wires_the_output(self):
    q = Quantizer(label_key="label", quantization="int8", learning_rate=1,
                  **self.channels())
    assert q.outputs["quantized_model"].type == standard_artifacts.Model
    assert q.exec_properties["quantization"] == "int8"
    assert q.exec_properties["learning_rate"] == 1.0

  def test_passes_the_distillation_parameters_on(self):
    q = Quantizer(label_key="label", quantization="qat",
                  distillation_weight=1, distillation_temperature=3,
                  **self.channels())
    assert q.exec_properties["distillation_weight"] == 1.0
    assert q.exec_properties["distillation_temperature"] == 3.0
    with pytest.raises(ValueError, match=r"`distillation_weight`=2.0 is outside"):
      Quantizer(label_key="label", quantization="qat", distillation_weight=2,
                **self.channels())

  def test_unknown_mode_fails_at_definition(self):
    with pytest.raises(ValueError, match="`quantization`='int4'.*'qat'"):
      Quantizer(quantization="int4", **self.channels())

  def test_data_mode_without_examples_fails_at_definition(self):
    channels = self.channels()
    del channels["examples"]
    with pytest.raises(ValueError, match="`examples`"):
      Quantizer(quantization="int16x8", **channels)

  def test_runtime_mode_checks_the_rest_later(self):
    mode = data_types.RuntimeParameter(name="mode", ptype=str,
                                       default="dynamic")
    Quantizer(quantization=mode, int8_io_type="int8", **self.channels())
    with pytest.raises(ValueError, match="learning_rate"):
      Quantizer(quantization=mode, learning_rate=-1.0, **self.channels())


# ------------------------------------------------------------------ Keras 3


@pytest.fixture(scope="module")
def keras3_model_artifact(tmp_path_factory):
  """The demo CNN in Keras 3, briefly trained, saved as its Trainer module does."""
  import keras  # pylint: disable=g-import-not-at-top
  from tfx_compression.pipelines.trainers import digits_trainer_keras3 as trainer  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  model = trainer.build_model()
  x, y = fixtures.digits_arrays()
  x = x.astype(np.float32)
  model.fit({k: x[:, i:i + 1] for i, k in enumerate(fixtures.FEATURES)}, y,
            epochs=2, batch_size=64, verbose=0)
  art = standard_artifacts.Model()
  art.uri = str(tmp_path_factory.mktemp("keras3") / "model")
  serving = os.path.join(art.uri, "Format-Serving")
  tf.saved_model.save(model, serving, signatures=trainer.make_serving_signatures(
      model, fixtures.feature_spec()))
  model.save(os.path.join(serving, "model.keras"))
  return art


def test_keras3_int8_model_predicts_like_the_keras_model(
    tmp_path, keras3_model_artifact, examples_artifact, schema_artifact):
  output = output_model(tmp_path)
  run(keras3_model_artifact, output, examples_artifact, schema_artifact,
      quantization="int8", label_key="label", num_representative_samples=50)
  serving = os.path.join(output.uri, "Format-Serving")
  with open(os.path.join(serving, "tflite_io.json")) as f:
    io = json.load(f)
  assert sorted(i["name"] for i in io["inputs"]) == fixtures.FEATURES
  assert output.get_string_custom_property("quantization") == "int8"
  model = model_io.load_keras_model(os.path.join(keras3_model_artifact.uri,
                                                 "Format-Serving"))
  decoder = features.ExampleDecoder(fixtures.schema_proto(), "label",
                                    features.keras_input_specs(model))
  feats, labels = decoder.decode(tf.constant(fixtures.serialized_eval_examples(200)))
  keras_acc = float(np.mean(np.argmax(model(feats), 1) == labels.numpy()))
  tflite_acc = eval_accuracy(os.path.join(serving, "model.tflite"), io)
  assert abs(tflite_acc - keras_acc) <= 0.03, (tflite_acc, keras_acc)


def test_keras3_qat_is_refused_naming_int8(tmp_path, keras3_model_artifact,
                                           examples_artifact, schema_artifact):
  output = output_model(tmp_path)
  with pytest.raises(ValueError, match=r"this model is Keras 3 .* Use "
                     r"quantization='int8'"):
    run(keras3_model_artifact, output, examples_artifact, schema_artifact,
        quantization="qat", label_key="label", qat_steps=2)
  assert not os.listdir(output.uri)


def test_only_the_chief_writes_in_a_multi_worker_run(tmp_path, model_artifact,
                                                     monkeypatch):
  # #21: as the Pruner (and TFX's Trainer), every worker runs the executor,
  # only the chief writes the model.
  cluster = {"chief": ["c:2222"], "worker": ["w:2222"]}
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": cluster, "task": {"type": "worker", "index": 0}}))
  worker = output_model(tmp_path, "worker")
  run(model_artifact, worker, quantization="dynamic", distribution="off")
  assert os.listdir(worker.uri) == []
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": cluster, "task": {"type": "chief", "index": 0}}))
  chief = output_model(tmp_path, "chief")
  run(model_artifact, chief, quantization="dynamic", distribution="off")
  assert sorted(os.listdir(os.path.join(chief.uri, "Format-Serving"))) == [
      "model.tflite", "tflite_io.json"]
