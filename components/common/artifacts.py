"""The TFX side shared by the executors: resolving artifacts and writing properties.

Executors use these to move artifacts in and out; the pure functions they call
never see an artifact or a URI.
"""

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from tfx import types
from tfx.types import artifact_utils
from tfx.utils import io_utils


def single(input_dict: Mapping[str, List[types.Artifact]], key: str,
           required: bool = True) -> Optional[types.Artifact]:
  """The one artifact of a channel, or None for an absent optional input."""
  artifacts = input_dict.get(key) or []
  if not artifacts:
    if required:
      raise ValueError(f"Input `{key}` is required but no artifact was given. "
                       f"Wire a channel to `{key}`.")
    return None
  return artifact_utils.get_single_instance(list(artifacts))


def split_patterns(examples: types.Artifact, split: str,
                   parameter: str = "splits") -> List[str]:
  """File patterns of one split of an Examples artifact, with a clear error."""
  names = artifact_utils.decode_split_names(examples.split_names)
  if split not in names:
    raise ValueError(f"`{parameter}` names split {split!r}, but the Examples "
                     f"artifact has splits {names}. Use one of those.")
  return [io_utils.all_files_pattern(
      artifact_utils.get_split_uri([examples], split))]


def read_schema(schema_artifact: Optional[types.Artifact]):
  """The Schema proto, or None."""
  if schema_artifact is None:
    return None
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  path = io_utils.get_only_uri_in_dir(schema_artifact.uri)
  return io_utils.parse_pbtxt_file(path, schema_pb2.Schema())


def transform_dir(transform_graph: Optional[types.Artifact]) -> Optional[str]:
  return transform_graph.uri if transform_graph is not None else None


def set_properties(artifact: types.Artifact, values: Mapping[str, Any]) -> None:
  """Writes numbers and strings as custom properties visible in ML Metadata."""
  for key, value in values.items():
    if value is None:
      continue
    if isinstance(value, bool):
      artifact.set_int_custom_property(key, int(value))
    elif isinstance(value, int):
      artifact.set_int_custom_property(key, value)
    elif isinstance(value, float):
      if math.isfinite(value):
        artifact.set_float_custom_property(key, value)
      else:
        artifact.set_string_custom_property(key, str(value))
    elif isinstance(value, str):
      artifact.set_string_custom_property(key, value)
    else:
      artifact.set_string_custom_property(key, json.dumps(value, sort_keys=True))


def write_json(path: str, payload: Any) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(payload, indent=2, sort_keys=True, default=str))


def is_placeholder(value: Any) -> bool:
  """True for a RuntimeParameter or placeholder, which is checked at run time."""
  from tfx.orchestration import data_types  # pylint: disable=g-import-not-at-top
  from tfx.dsl.placeholder import placeholder as ph  # pylint: disable=g-import-not-at-top
  return isinstance(value, (data_types.RuntimeParameter, ph.Placeholder))


def concrete(exec_properties: Mapping[str, Any]) -> Dict[str, Any]:
  """Parameters set to concrete values (placeholders dropped, for definition-time checks)."""
  return {k: v for k, v in exec_properties.items()
          if v is not None and not is_placeholder(v)}
