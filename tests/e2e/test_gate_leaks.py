"""The gate blesses only what it measured: each leak of issue 17, end to end.

One small pipeline shape serves every case: Importers bring in a baseline and a
candidate model, Examples and a Schema (made once per module from the test
fixtures, no Trainer), then the CompressionEvaluator gates and TFX's stock Pusher
pushes the candidate only if it was blessed. Each case changes one thing and checks,
in ML Metadata and on disk, that nothing was pushed; one control case shows the same
pipeline does push a candidate that passes.
"""

import os

import numpy as np
import pytest
import tf_keras as keras
from tfx import v1 as tfx
from tfx.types import standard_artifacts

import tfx_compression
from tfx_compression.components.common import features
from tfx_compression.components.compression_evaluator import evaluation
from tfx_compression.pipelines import summary
from tests import fixtures
from tests.components import test_compression_evaluator_executor as executor_tests

pytestmark = pytest.mark.e2e

GATE = dict(label_key="label", max_drop=0.05, latency_samples=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("gate_leaks")


@pytest.fixture(scope="module")
def data(root, model_artifact, trained_model):
  """Artifact URIs the Importers bring in, made once."""
  dead = keras.models.clone_model(trained_model)
  weights = trained_model.get_weights()
  weights[-2] = np.zeros_like(weights[-2])  # the last layer's kernel and bias:
  weights[-1] = np.zeros_like(weights[-1])  # every class scores the same
  dead.set_weights(weights)
  regression = keras.Model(*_digits_regression())
  regression.compile(loss="mean_squared_error")
  regression_art = standard_artifacts.Model()
  regression_art.uri = str(root / "regression")
  regression.save(os.path.join(regression_art.uri, "Format-Serving"),
                  save_format="tf")
  missing_examples, varlen_schema = executor_tests.missing_label_examples(
      str(root))
  return {
      "baseline": model_artifact.uri,
      "dead": fixtures.save_trainer_model(dead, str(root), "dead").uri,
      "regression": regression_art.uri,
      "examples": fixtures.write_examples(str(root / "digits")).uri,
      "three_eval": fixtures.write_examples(str(root / "three"), splits={
          "train": slice(0, 50), "eval": slice(50, 53)}).uri,
      "missing_label_examples": missing_examples.uri,
      "schema": fixtures.write_schema(str(root)).uri,
      "varlen_schema": varlen_schema.uri,
  }


def _digits_regression():
  inputs = {k: keras.Input(shape=(1,), name=k) for k in fixtures.FEATURES}
  out = keras.layers.Dense(1)(keras.layers.Concatenate()(list(inputs.values())))
  return inputs, out


def _import(name, uri, artifact_type, **kwargs):
  return tfx.dsl.Importer(source_uri=uri, artifact_type=artifact_type,
                          **kwargs).with_id(name)


def _pipeline(root, name, data, baseline="baseline", candidate="baseline",
              examples="examples", schema="schema", blessing=None, **gate):
  """Importers -> CompressionEvaluator -> stock Pusher of the candidate.

  ``blessing``: None (not wired), or a function of the baseline's Importer
  returning (extra components, a ModelBlessing channel).
  """
  base = _import("baseline", data[baseline], standard_artifacts.Model)
  cand = _import("candidate", data[candidate], standard_artifacts.Model)
  ex = _import("examples", data[examples], standard_artifacts.Examples,
               properties={"split_names": '["train", "eval"]'})
  sc = _import("schema", data[schema], standard_artifacts.Schema)
  extra, blessing_channel = blessing(base) if blessing else ([], None)
  evaluator = tfx_compression.CompressionEvaluator(
      baseline_model=base.outputs["result"],
      candidate_model=cand.outputs["result"],
      examples=ex.outputs["result"], schema=sc.outputs["result"],
      baseline_blessing=blessing_channel, **{**GATE, **gate})
  pusher = tfx.components.Pusher(
      model=cand.outputs["result"], model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=str(root / name / "serving"))))
  return tfx.dsl.Pipeline(
      pipeline_name=name, pipeline_root=str(root / name / "pipeline_root"),
      components=[base, cand, ex, sc, *extra, evaluator, pusher],
      metadata_connection_config=(
          tfx.orchestration.metadata.sqlite_metadata_connection_config(
              str(root / "metadata.sqlite"))))


def _outcome(root, name):
  """(blessed, verdict, pushed) from ML Metadata; asserts nothing is on disk
  when nothing was pushed."""
  store = summary.open_store(str(root / "metadata.sqlite"))
  blessing = summary.latest_artifact(store, name, "CompressionEvaluator",
                                     "ModelBlessing")
  pushed = summary.latest_artifact(store, name, "Pusher", "PushedModel")
  props = summary.artifact_properties(blessing) if blessing else {}
  pushed_flag = summary.artifact_properties(pushed)["pushed"] if pushed else 0
  return props.get("blessed"), props.get("reason", ""), pushed_flag


def _pushed_files(root, name):
  serving = root / name / "serving"
  return [os.path.join(r, f) for r, _, fs in os.walk(serving) for f in fs]


def _run_not_blessed(root, name, pipe, reason):
  tfx.orchestration.LocalDagRunner().run(pipe)
  blessed, verdict, pushed = _outcome(root, name)
  assert blessed == 0, verdict
  assert reason in verdict, verdict
  assert pushed == 0
  assert _pushed_files(root, name) == []


def _run_failing(root, name, pipe, error, match):
  with pytest.raises(error, match=match):
    tfx.orchestration.LocalDagRunner().run(pipe)
  assert _outcome(root, name) == (None, "", 0)  # no blessing, no push
  assert _pushed_files(root, name) == []


def _blessing_importer(current_model):
  def make(unused_base):
    imp = _import("upstream_blessing", "/nonexistent/blessing",
                  standard_artifacts.ModelBlessing,
                  custom_properties={"blessed": 1,
                                     "current_model": current_model})
    return [imp], imp.outputs["result"]
  return make


def _resolved_to_nothing(unused_base):
  """The latest blessed model's blessing: none exists in this pipeline yet."""
  resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
  ).with_id("latest_blessed")
  return [resolver], resolver.outputs["model_blessing"]


def test_control_a_passing_candidate_is_pushed(root, data):
  """The same pipeline pushes when everything holds, with a blessing that is
  the baseline's: 'pushed nothing' below is the gate's doing."""
  name = "control"
  pipe = _pipeline(root, name, data,
                   blessing=_blessing_importer(data["baseline"]))
  tfx.orchestration.LocalDagRunner().run(pipe)
  blessed, verdict, pushed = _outcome(root, name)
  assert (blessed, pushed) == (1, 1), verdict
  assert any(f.endswith("saved_model.pb") for f in _pushed_files(root, name))


def test_ties_in_top_k_do_not_bless_a_dead_model(root, data):
  """Leak 1: a candidate scoring every class alike had top-k accuracy 1.0."""
  name = "top_k_ties"
  _run_not_blessed(root, name, _pipeline(
      root, name, data, candidate="dead", metric="top_k_accuracy", top_k=3),
                   "max_drop FAILED")


def test_wired_baseline_blessing_that_resolves_to_nothing(root, data):
  """Leak 2: a wired baseline gate with no artifact at run time."""
  name = "blessing_resolved_to_nothing"
  _run_not_blessed(root, name, _pipeline(
      root, name, data, blessing=_resolved_to_nothing),
                   "resolved to no blessing")


def test_blessing_of_another_model(root, data):
  """Leak 3: a blessing whose current_model is not the baseline given."""
  name = "blessing_of_another_model"
  _run_not_blessed(root, name, _pipeline(
      root, name, data, blessing=_blessing_importer("/elsewhere/model")),
                   "blesses another model than `baseline_model`")


def test_threshold_that_cannot_fail_is_refused_at_definition(root, data):
  """Leak 4: max_drop=5 on accuracy blessed anything."""
  name = "max_drop_5"
  with pytest.raises(ValueError, match=r"`max_drop`=5.0 is at least 1"):
    _pipeline(root, name, data, max_drop=5)
  assert not (root / name).exists()


def test_three_examples_are_too_little_evidence(root, data):
  """Leak 5: two or three eval examples, both models at 0.0, BLESSED."""
  name = "three_examples"
  _run_not_blessed(root, name, _pipeline(
      root, name, data, examples="three_eval"),
                   "only 3 example(s) were evaluated")


def test_missing_labels_are_an_error(root, data):
  """Leak 6: half the labels missing were read as class 0."""
  name = "missing_labels"
  _run_failing(root, name, _pipeline(
      root, name, data, examples="missing_label_examples",
      schema="varlen_schema", min_examples=10), features.DataError,
               r"50 of 100 examples of the 'eval' split have no value")


def test_regression_model_is_refused(root, data):
  """Leak 7: a one-unit MSE model's outputs were read as logits."""
  name = "regression"
  _run_failing(root, name, _pipeline(
      root, name, data, baseline="regression", candidate="regression"),
               evaluation.EvaluationError, r"regression loss.*`output_kind`")
