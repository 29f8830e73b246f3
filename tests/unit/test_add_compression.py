"""add_compression: wiring and definition-time errors that name the argument."""

import pytest
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from tfx_compression import add_compression


def channel(artifact_type):
  return tfx.dsl.Channel(type=artifact_type)


def base_args(**overrides):
  args = dict(model=channel(standard_artifacts.Model),
              examples=channel(standard_artifacts.Examples),
              schema=channel(standard_artifacts.Schema),
              label_key="label", push_destination="/tmp/serving")
  args.update(overrides)
  return args


def test_returns_components_in_order_with_unique_ids():
  result = add_compression(**base_args(quantization="int8"))
  ids = [c.id for c in result.components]
  assert ids == ["CompressionPruner", "CompressionQuantizer",
                 "CompressionEvaluator", "CompressedModelPusher"]
  assert result.pusher.inputs["model"] is result.candidate
  assert result.candidate.type_name == "Model"


def test_quantization_none_pushes_the_pruned_model():
  result = add_compression(**base_args(quantization=None))
  assert result.quantizer is None
  assert [c.id for c in result.components][0] == "CompressionPruner"


@pytest.mark.parametrize("overrides,error,needle", [
    (dict(model=channel(standard_artifacts.Examples)), TypeError, "`model`"),
    (dict(examples=channel(standard_artifacts.Model)), TypeError, "`examples`"),
    (dict(baseline_blessing=channel(standard_artifacts.Model)), TypeError,
     "`baseline_blessing`"),
    (dict(label_key=""), ValueError, "`label_key`"),
    (dict(schema=None), ValueError, "`schema`"),
    (dict(sparsity_structure=None, quantization=None), ValueError,
     "Nothing to compress"),
    (dict(push_destination=""), ValueError, "`push_destination`"),
    (dict(target_sparsity=1.5), ValueError, "target_sparsity"),
    (dict(max_drop=None), ValueError, "max_drop"),
])
def test_bad_arguments_name_the_argument(overrides, error, needle):
  with pytest.raises(error, match=needle):
    add_compression(**base_args(**overrides))


def test_clashing_ids_are_refused():
  first = add_compression(**base_args())
  with pytest.raises(ValueError, match="already used"):
    add_compression(**base_args(), existing_components=first.components)
  second = add_compression(**base_args(), existing_components=first.components,
                           id_prefix="Mobile")
  assert second.evaluator.id == "MobileCompressionEvaluator"


def _param(component, name):
  return component.exec_properties.get(name)


def test_distillation_reaches_every_fine_tuning():
  fixed = add_compression(**base_args(quantization="qat"),
                          distillation_weight=0.5,
                          distillation_temperature=3.0)
  for component in (fixed.pruner, fixed.quantizer):
    assert _param(component, "distillation_weight") == 0.5
    assert _param(component, "distillation_temperature") == 3.0
  # Only QAT fine-tunes in the Quantizer: int8 gets nothing (and would refuse).
  int8 = add_compression(**base_args(quantization="int8"),
                         distillation_weight=0.5)
  assert _param(int8.pruner, "distillation_weight") == 0.5
  assert not _param(int8.quantizer, "distillation_weight")
  planned = add_compression(**base_args(), plan=True, distillation_weight=0.5)
  assert _param(planned.planner, "distillation_weight") == 0.5


def test_distillation_given_twice_is_refused():
  with pytest.raises(ValueError, match=r"`distillation_weight` is given both "
                                       r"as an argument and in `pruner_kwargs`"):
    add_compression(**base_args(), distillation_weight=0.5,
                    pruner_kwargs={"distillation_weight": 0.2})
  with pytest.raises(ValueError, match=r"`distillation_weight`=2\.0 is outside "
                                       r"\[0, 1\]"):
    add_compression(**base_args(), distillation_weight=2.0)
