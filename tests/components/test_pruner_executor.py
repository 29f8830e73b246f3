"""The Pruner executor on the demo CNN, and the component's definition-time checks."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tfx import types
from tfx.orchestration import data_types
from tfx.types import standard_artifacts

from tfx_compression.components.common import features
from tfx_compression.components.common import model_io
from tfx_compression.components.pruner import component
from tfx_compression.components.pruner import executor
from tfx_compression.components.pruner import m_by_n
from tfx_compression.components.pruner import pruning
from tests import fixtures

PRUNED = ["conv1", "conv2", "dense1", "probabilities"]


def _tree_digest(path):
  h = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      with open(os.path.join(root, name), "rb") as f:
        h.update(name.encode() + f.read())
  return h.hexdigest()


def _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
         name="run", **params):
  out = standard_artifacts.Model()
  out.uri = str(tmp_path / name / "pruned_model")
  run = standard_artifacts.ModelRun()
  run.uri = str(tmp_path / name / "model_run")
  inputs = {executor.MODEL_KEY: [model_artifact],
            executor.EXAMPLES_KEY: [examples_artifact]}
  if schema_artifact is not None:
    inputs[executor.SCHEMA_KEY] = [schema_artifact]
  props = {"label_key": "label", "train_steps": 30, "batch_size": 32}
  props.update(params)
  executor.Executor().Do(inputs, {executor.PRUNED_MODEL_KEY: [out],
                                  executor.MODEL_RUN_KEY: [run]}, props)
  return out, run


def _serve(path, serialized):
  loaded = tf.saved_model.load(path)
  fn = loaded.signatures["serving_default"]
  return fn(examples=tf.constant(serialized))


def _specs(fn):
  return (fn.structured_input_signature, fn.structured_outputs)


@pytest.fixture(scope="module")
def unstructured(tmp_path_factory, model_artifact, examples_artifact,
                 schema_artifact):
  tmp = tmp_path_factory.mktemp("pruner")
  source = model_io.serving_dir(model_artifact.uri)
  digest = _tree_digest(source)
  out, run = _run(tmp, model_artifact, examples_artifact, schema_artifact,
                  target_sparsity=0.8)
  return out, run, digest


def test_pruned_model_properties(unstructured):
  out, _, _ = unstructured
  props = {k: out.get_custom_property(k) for k in (
      "sparsity", "target_sparsity", "param_count", "zero_count",
      "saved_model_bytes", "gzip_weight_bytes", "baseline_gzip_weight_bytes",
      "sparsity_structure", "eval_accuracy", "baseline_eval_accuracy",
      "pruned_layers")}
  assert abs(props["sparsity"] - 0.8) <= 0.01
  assert props["target_sparsity"] == 0.8
  assert props["sparsity_structure"] == "unstructured"
  assert props["pruned_layers"] == ",".join(PRUNED)
  assert props["zero_count"] >= 0.79 * 283424 and props["param_count"] > 283424
  assert props["gzip_weight_bytes"] < props["baseline_gzip_weight_bytes"] / 2
  serving = os.path.join(out.uri, model_io.SERVING_DIR)
  assert props["saved_model_bytes"] == pytest.approx(
      sum(os.path.getsize(os.path.join(r, f))
          for r, _, fs in os.walk(serving) for f in fs))
  assert 0 <= props["eval_accuracy"] <= 1


def test_kernels_are_sparse_on_disk(unstructured):
  out, _, _ = unstructured
  model = keras.models.load_model(model_io.serving_dir(out.uri), compile=False)
  for name in PRUNED:
    zeros = float((model.get_layer(name).kernel.numpy() == 0).mean())
    assert abs(zeros - 0.8) <= 0.01, (name, zeros)


def test_input_model_untouched(unstructured, model_artifact):
  _, _, digest = unstructured
  assert _tree_digest(model_io.serving_dir(model_artifact.uri)) == digest


def test_serves_like_the_input(unstructured, model_artifact):
  out, _, _ = unstructured
  src = model_io.serving_dir(model_artifact.uri)
  dst = os.path.join(out.uri, model_io.SERVING_DIR)
  a, b = tf.saved_model.load(src), tf.saved_model.load(dst)
  assert set(a.signatures) == set(b.signatures)
  for name in a.signatures:
    assert _specs(a.signatures[name]) == _specs(b.signatures[name]), name
  examples = fixtures.serialized_eval_examples(16)
  want, got = _serve(src, examples), _serve(dst, examples)
  assert set(want) == set(got)
  for key in want:
    assert want[key].shape == got[key].shape and want[key].dtype == got[key].dtype
  # The output is the pruned model, not a copy of the input.
  assert not np.allclose(want["probabilities"], got["probabilities"])


def test_loads_with_plain_tensorflow(unstructured, tmp_path):
  out, _, _ = unstructured
  path = os.path.join(out.uri, model_io.SERVING_DIR)
  examples = tmp_path / "examples.tfrecord"
  with tf.io.TFRecordWriter(str(examples)) as w:
    for e in fixtures.serialized_eval_examples(4):
      w.write(e)
  script = textwrap.dedent(f"""
      import sys
      import tensorflow as tf
      m = tf.saved_model.load({path!r})
      data = [r.numpy() for r in tf.data.TFRecordDataset({str(examples)!r})]
      out = m.signatures["serving_default"](examples=tf.constant(data))
      assert "tensorflow_model_optimization" not in sys.modules
      print(out["probabilities"].shape)
  """)
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, env=env, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().endswith("(4, 10)")


def test_model_run_has_pruning_summaries(unstructured):
  _, run, _ = unstructured
  events = [os.path.join(r, f) for r, _, fs in os.walk(run.uri) for f in fs
            if f.startswith("events.out.tfevents")]
  tags = set()
  for path in events:
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  assert any("mask" in t and t.endswith("/sparsity") for t in tags), tags
  assert "pruned/accuracy" in tags and "baseline/accuracy" in tags


def test_same_seed_same_weights(unstructured, tmp_path, model_artifact,
                                examples_artifact, schema_artifact):
  out, _, _ = unstructured
  again, _ = _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
                  target_sparsity=0.8)
  a = keras.models.load_model(model_io.serving_dir(out.uri), compile=False)
  b = keras.models.load_model(model_io.serving_dir(again.uri), compile=False)
  fixtures.assert_same_weights(a.get_weights(), b.get_weights())


def test_two_four_blocks(tmp_path, model_artifact, examples_artifact,
                         schema_artifact):
  out, _ = _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
                sparsity_structure="2:4", train_steps=10)
  assert out.get_custom_property("sparsity") == pytest.approx(0.5)
  assert out.get_custom_property("target_sparsity") == 0.5
  # conv1 has one input channel: no block of 4 to sparsify.
  assert out.get_custom_property("pruned_layers") == "conv2,dense1,probabilities"
  model = keras.models.load_model(model_io.serving_dir(out.uri), compile=False)
  for name in ("conv2", "dense1", "probabilities"):
    kernel = model.get_layer(name).kernel.numpy()
    assert m_by_n.m_by_n_violations(kernel, (2, 4)) == 0, name


def test_channels(tmp_path, model_artifact, examples_artifact,
                  schema_artifact):
  out, _ = _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
                sparsity_structure="channels", target_sparsity=0.5,
                train_steps=10, finetune_steps=5)
  kept = json.loads(out.get_custom_property("channels_kept"))
  assert kept == {"conv1": 16, "conv2": 32, "dense1": 128}
  assert out.get_custom_property("sparsity") == pytest.approx(0.5)
  before = out.get_custom_property("params_before")
  after = out.get_custom_property("params_after")
  assert after < before / 2 and out.get_custom_property("param_count") == after
  assert (out.get_custom_property("macs_after")
          < out.get_custom_property("macs_before"))
  src = model_io.serving_dir(model_artifact.uri)
  dst = os.path.join(out.uri, model_io.SERVING_DIR)
  a, b = tf.saved_model.load(src), tf.saved_model.load(dst)
  assert set(a.signatures) == set(b.signatures)
  assert _specs(a.signatures["serving_default"]) == _specs(
      b.signatures["serving_default"])
  got = _serve(dst, fixtures.serialized_eval_examples(4))
  assert got["probabilities"].shape == (4, 10)


# Bad inputs: a clear error, and no output that looks finished.


def _assert_no_output(tmp_path, name="run"):
  assert not os.path.exists(tmp_path / name / "pruned_model" /
                            model_io.SERVING_DIR)


def test_label_key_absent_from_schema(tmp_path, model_artifact,
                                      examples_artifact, schema_artifact):
  with pytest.raises(features.DataError, match="'lable'"):
    _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
         label_key="lable")
  _assert_no_output(tmp_path)


def test_empty_train_split(tmp_path, model_artifact, schema_artifact):
  empty = fixtures.write_examples(str(tmp_path / "data"), splits={
      "train": slice(0, 0), "eval": slice(0, 50)})
  with pytest.raises(features.DataError, match="'train' split is empty"):
    _run(tmp_path, model_artifact, empty, schema_artifact)
  _assert_no_output(tmp_path)


def test_unknown_split_names_parameter(tmp_path, model_artifact,
                                       examples_artifact, schema_artifact):
  with pytest.raises(ValueError, match="`eval_split`.*'valid'"):
    _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
         eval_split="valid")


def test_not_a_keras_savedmodel(tmp_path, examples_artifact, schema_artifact):

  class Module(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, examples):
      return {"out": tf.strings.length(examples)}

  art = standard_artifacts.Model()
  art.uri = str(tmp_path / "module_model")
  tf.saved_model.save(Module(), os.path.join(art.uri, model_io.SERVING_DIR))
  with pytest.raises(model_io.ModelLoadError, match="without Keras metadata"):
    _run(tmp_path, art, examples_artifact, schema_artifact)
  _assert_no_output(tmp_path)


def test_nan_during_fine_tuning_fails_and_emits_nothing(
    tmp_path, model_artifact, examples_artifact, schema_artifact):
  module = tmp_path / "nan_module.py"
  module.write_text(textwrap.dedent("""
      import tensorflow as tf

      def input_fn(file_pattern, data_accessor, schema, batch_size):
        features = {f"pixel_{i:02d}": tf.fill([batch_size, 1], float("nan"))
                    for i in range(64)}
        labels = tf.zeros([batch_size], tf.int64)
        return tf.data.Dataset.from_tensors((features, labels)).repeat()
  """))
  with pytest.raises(pruning.NonFiniteLossError, match="learning_rate"):
    _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
         module_file=str(module), train_steps=4)
  _assert_no_output(tmp_path)
  assert not os.path.exists(tmp_path / "run" / "model_run")


# The component: bad values fail when the pipeline is defined.


def _channels():
  return dict(model=types.Channel(type=standard_artifacts.Model),
              examples=types.Channel(type=standard_artifacts.Examples),
              schema=types.Channel(type=standard_artifacts.Schema))


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_sparsity=1.0), r"`target_sparsity`=1.0"),
    (dict(schedule="linear"), r"`schedule`='linear'"),
    (dict(sparsity_structure="3:2"), r"`sparsity_structure`='3:2'"),
    (dict(begin_step=100, end_step=50), r"`end_step`=50"),
    (dict(label_key=None), r"`label_key`"),
])
def test_component_rejects_bad_values(kwargs, match):
  args = dict(label_key="label", **_channels())
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    component.Pruner(**args)


def test_component_wires_and_encodes():
  sparsity = data_types.RuntimeParameter(name="sparsity", ptype=float,
                                         default=0.5)
  pruner = component.Pruner(label_key="label", target_sparsity=sparsity,
                            include_layers=["conv*", "dense1"],
                            initial_sparsity=0, train_steps=50, **_channels())
  props = pruner.exec_properties
  assert props["include_layers"] == "conv*,dense1"
  assert props["target_sparsity"] is sparsity
  assert props["initial_sparsity"] == 0.0 and isinstance(
      props["initial_sparsity"], float)
  assert set(pruner.outputs) == {"pruned_model", "model_run"}
  assert json.dumps(props["train_steps"]) == "50"


# The iterative search (components/pruner/search.py) through the executor.


def test_search_emits_the_chosen_step_with_its_curve(tmp_path, model_artifact,
                                                     examples_artifact,
                                                     schema_artifact):
  from tfx_compression.components.common import side_files
  from tfx_compression.components.pruner import search
  out, run = _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
                  search_sparsities="0.5,0.7,0.95", search_steps=30,
                  max_drop=0.03)
  with open(os.path.join(out.uri, side_files.PRUNING_SEARCH)) as f:
    curve = json.load(f)
  steps = curve["steps"]
  assert [s["sparsity"] for s in steps][:2] == [0.5, 0.7]
  passed = [s for s in steps if s["passed"]]
  assert passed and all(s["passed"] for s in steps[:len(passed)])
  chosen = passed[-1]
  assert curve["chosen_sparsity"] == chosen["sparsity"]
  assert out.get_custom_property("search_chosen_sparsity") == chosen["sparsity"]
  assert out.get_custom_property("search_steps_tried") == len(steps)
  assert abs(out.get_custom_property("sparsity") - chosen["sparsity"]) < 0.01
  # The emitted SavedModel holds exactly the chosen step's weights.
  emitted = model_io.load_keras_model(os.path.join(out.uri, "Format-Serving"))
  assert search.weights_digest(emitted) == chosen["weights_sha256"]
  # The curve is in TensorBoard too.
  assert any("search" in root for root, _, _ in os.walk(run.uri))


def test_search_whose_first_step_fails_emits_nothing(tmp_path, model_artifact,
                                                     examples_artifact,
                                                     schema_artifact):
  from tfx_compression.components.pruner import search
  with pytest.raises(search.SearchError, match="first step") as e:
    _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
         search_sparsities="0.5,0.7", search_steps=20, min_value=1.01)
  assert "sparsity 0.5" in str(e.value)
  assert not os.path.exists(tmp_path / "run" / "pruned_model" / "Format-Serving")


class _Killed(Exception):
  """Stands for a SIGKILL in the middle of the pruning."""


def test_scratch_lives_inside_the_output_artifact(tmp_path, model_artifact,
                                                  examples_artifact,
                                                  schema_artifact, monkeypatch):
  seen = {}

  def killed(model, train_ds, config, export_dir, **kwargs):
    seen.update(export_dir=export_dir, log_dir=kwargs["log_dir"])
    raise _Killed()

  monkeypatch.setattr(pruning, "prune_and_export", killed)
  with pytest.raises(_Killed):
    _run(tmp_path, model_artifact, examples_artifact, schema_artifact)
  # What a SIGKILL at that moment would have left: all inside the artifact of
  # the killed execution, nothing in the system's temporary directory.
  artifact = str(tmp_path / "run" / "pruned_model") + os.sep
  assert seen["export_dir"].startswith(artifact), seen
  assert seen["log_dir"].startswith(artifact), seen
  _assert_no_output(tmp_path)
  assert not os.path.exists(tmp_path / "run" / "pruned_model" / ".scratch")


def test_distillation_through_the_executor(tmp_path, model_artifact,
                                           examples_artifact, schema_artifact):
  # #20: the teacher's outputs ride with the decoded Examples' labels; the
  # emitted model keeps the input's signatures and loads without our loss.
  out, _ = _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
                target_sparsity=0.8, train_steps=20, distillation_weight=0.5,
                distillation_temperature=2.0)
  assert out.get_custom_property("sparsity") == pytest.approx(0.8, abs=0.01)
  assert 0.0 < out.get_custom_property("eval_accuracy") <= 1.0
  model = keras.models.load_model(model_io.serving_dir(out.uri), compile=False)
  assert "serving_default" in model.signatures


def test_a_worker_that_is_not_the_chief_writes_no_output(
    tmp_path, model_artifact, examples_artifact, schema_artifact, monkeypatch):
  # #21, multi-worker fine-tuning: every worker runs the executor and trains
  # (the all-reduce needs them all); as with TFX's Trainer only the chief
  # writes the outputs.
  written = {}

  def pruned(model, train_ds, config, export_dir, **kwargs):
    written.update(export_dir=export_dir, log_dir=kwargs["log_dir"])
    for path in (export_dir, kwargs["log_dir"]):
      with open(os.path.join(path, "file"), "w") as f:
        f.write("x")
    props = dict(sparsity=0.5, target_sparsity=0.5, zero_count=1,
                 param_count=2, baseline_gzip_weight_bytes=3,
                 gzip_weight_bytes=2)
    return _FakeOutcome(props)

  monkeypatch.setattr(pruning, "prune_and_export", pruned)
  worker = {"cluster": {"chief": ["c:2222"], "worker": ["w:2222"]},
            "task": {"type": "worker", "index": 0}}
  monkeypatch.setenv("TF_CONFIG", json.dumps(worker))
  _run(tmp_path, model_artifact, examples_artifact, schema_artifact,
       name="worker", distribution="off")
  assert not os.path.exists(tmp_path / "worker" / "model_run")
  assert not os.path.exists(tmp_path / "worker" / "pruned_model" /
                            model_io.SERVING_DIR)
  assert not os.path.exists(written["export_dir"])  # The worker's copy is gone.
  # The chief of the same cluster writes both.
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      dict(worker, task={"type": "chief", "index": 0})))
  out, run = _run(tmp_path, model_artifact, examples_artifact,
                  schema_artifact, name="chief", distribution="off")
  assert os.listdir(os.path.join(out.uri, model_io.SERVING_DIR)) == ["file"]
  assert os.listdir(run.uri) == ["file"]


class _FakeOutcome:
  """What prune_and_export returns, as far as the executor reads it."""

  def __init__(self, props):
    self._props = props
    self.search = None
    self.result = type("Result", (), {"metrics": {}, "baseline_metrics": {}})()

  def properties(self):
    return dict(self._props)
