"""The Kubeflow runner's option checks: image reference, URIs, ``--resources``.

Pure functions over strings (kfp is imported only to build a ResourceSpec), so
that bad input fails before anything heavy is imported. Every error is a
``UsageError`` naming the option, the value and what to give instead.
"""

import re
from typing import Any, Dict, List, Optional, Tuple

# Steps whose pods --resources can size, and what it sets for each.
RESOURCE_STEPS = ("Trainer", "Pruner", "Quantizer", "CompressionPlanner",
                  "CompressionEvaluator")
_RESOURCE_HELP = ("STEP:cpu=N,memory=GB,gpu=N,gpu_type=TYPE, e.g. "
                  "Pruner:cpu=8,memory=32,gpu=2,gpu_type=NVIDIA_TESLA_T4")

# Docker image reference (distribution/reference grammar, slightly simplified):
# [domain[:port]/]path-component(/path-component)*[:tag][@digest]
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# Remote schemes tf.io.gfile handles in the image (TF 2.16 has no s3/hdfs built in).
GFILE_SCHEMES = ("gs",)


class UsageError(ValueError):
  """A bad command-line value; the message names the option."""


def split_image(image: str) -> Tuple[str, Optional[str], Optional[str]]:
  """Splits an image reference into (name, tag, digest).

  Example:
    >>> split_image("gcr.io/p/tfx-compression:0.1.0")
    ('gcr.io/p/tfx-compression', '0.1.0', None)
    >>> split_image("localhost:5000/img")
    ('localhost:5000/img', None, None)
  """
  name, _, digest = image.partition("@")
  tag = None
  slash = name.rfind("/")
  colon = name.rfind(":")
  if colon > slash:  # a ':' after the last '/' starts the tag, not a registry port
    name, tag = name[:colon], name[colon + 1:]
  return name, tag, (digest or None)


def check_image(image: Optional[str]) -> str:
  """The image reference, stripped; UsageError when empty, untagged or malformed.

  Example:
    >>> check_image("gcr.io/my-project/tfx-compression:0.1.0")
    'gcr.io/my-project/tfx-compression:0.1.0'
  """
  image = (image or "").strip()
  if not image:
    raise UsageError(
        "--image (make: IMAGE) is empty: give the image built from docker/ as "
        "NAME:TAG, e.g. --image gcr.io/my-project/tfx-compression:0.1.0.")
  name, tag, digest = split_image(image)
  if tag is None and digest is None:
    raise UsageError(
        f"--image {image!r} has no tag: every step pulls this image, so name a "
        f"fixed version, e.g. --image {image}:0.1.0 (or a digest, "
        f"{image}@sha256:...).")
  if not _NAME_RE.fullmatch(name):
    raise UsageError(
        f"--image {image!r}: {name!r} is not a valid image name (lowercase "
        "letters, digits, '.', '_', '-' and '/' separated parts, an optional "
        "registry host first), e.g. gcr.io/my-project/tfx-compression:0.1.0.")
  if tag is not None and not _TAG_RE.fullmatch(tag):
    raise UsageError(
        f"--image {image!r}: tag {tag!r} is not valid (letters, digits, '_', '.', "
        "'-', at most 128, not starting with '.' or '-').")
  if digest is not None and not _DIGEST_RE.fullmatch(digest):
    raise UsageError(
        f"--image {image!r}: digest {digest!r} is not valid (expected "
        "sha256:<64 hex digits>).")
  return image


def is_remote_uri(uri: str) -> bool:
  """True for a URI with a scheme other than file:// (gs://, s3://, ...).

  Example:
    >>> is_remote_uri("gs://bucket/root"), is_remote_uri("/tmp/root")
    (True, False)
  """
  match = _SCHEME_RE.match(uri)
  return bool(match) and match.group(1).lower() != "file"


def check_uri(value: Optional[str], option: str, make_var: Optional[str],
              what: str) -> Tuple[str, Optional[str]]:
  """(uri, warning or None); UsageError when the value is missing or empty.

  Example:
    >>> check_uri("gs://b/root", "--pipeline-root", "PIPELINE_ROOT", "the root")
    ('gs://b/root', None)
  """
  value = (value or "").strip()
  if not value:
    named = f"{option} (make: {make_var})" if make_var else option
    raise UsageError(
        f"{named} is missing: give {what} as a URI the cluster can read, "
        f"e.g. {option} gs://my-bucket/...")
  warning = None
  if not is_remote_uri(value):
    warning = (
        f"{option} {value!r} is a local path. The pipeline's steps run in pods "
        f"on the cluster, which cannot see this machine's disk: use a gs:// URI "
        f"unless every pod mounts {value!r}.")
  elif _SCHEME_RE.match(value).group(1).lower() not in GFILE_SCHEMES:
    warning = (
        f"{option} {value!r}: the steps read and write it with tf.io.gfile, "
        f"which in the image (TensorFlow 2.16 with the pinned packages) knows "
        f"only gs:// and local paths ('File system scheme not implemented' "
        f"otherwise). Use gs://, or add a file system plugin such as "
        f"tensorflow-io to the image.")
  return value, warning


def _positive(option_value: str, key: str, text: str, integer: bool = False):
  try:
    number = int(text) if integer else float(text.rstrip("Gg"))
  except ValueError:
    number = None
  if number is None or not 0 < number < float("inf"):
    kind = "a whole number" if integer else "a number"
    raise UsageError(f"--resources {option_value!r}: {key}={text!r} must be "
                     f"{kind} > 0. Use {_RESOURCE_HELP}.")
  return number


def parse_resources(values: Optional[List[str]]) -> Dict[str, Dict[str, Any]]:
  """``--resources`` values -> {step: {'cpu', 'memory' (GB), 'gpu', 'gpu_type'}}.

  Example:
    >>> parse_resources(["Pruner:cpu=8,memory=32G,gpu=1,gpu_type=NVIDIA_TESLA_T4"])
    {'Pruner': {'cpu': 8.0, 'memory': 32.0, 'gpu': 1, 'gpu_type': 'NVIDIA_TESLA_T4'}}
  """
  result: Dict[str, Dict[str, Any]] = {}
  for value in values or ():
    step, colon, rest = value.partition(":")
    step = step.strip()
    if step not in RESOURCE_STEPS:
      raise UsageError(f"--resources {value!r}: {step!r} is not one of "
                       f"{RESOURCE_STEPS}. Use {_RESOURCE_HELP}.")
    if step in result:
      raise UsageError(f"--resources names {step} twice; give its resources "
                       "in one value.")
    resources: Dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in rest.split(","))):
      key, _, text = (p.strip() for p in item.partition("="))
      if key == "gpu_type" and text:
        resources[key] = text
      elif key in ("cpu", "memory", "gpu"):
        resources[key] = _positive(value, key, text, integer=key == "gpu")
      else:
        raise UsageError(f"--resources {value!r}: {item!r} is not cpu=N, "
                         f"memory=GB, gpu=N or gpu_type=TYPE. Use "
                         f"{_RESOURCE_HELP}.")
    if not colon or not resources:
      raise UsageError(f"--resources {value!r} sets nothing for {step}. Use "
                       f"{_RESOURCE_HELP}.")
    if ("gpu" in resources) != ("gpu_type" in resources):
      raise UsageError(
          f"--resources {value!r}: gpu and gpu_type go together (the count and "
          "the accelerator, e.g. gpu=1,gpu_type=NVIDIA_TESLA_T4 on Vertex AI or "
          "gpu_type=nvidia.com/gpu on Kubeflow Pipelines).")
    result[step] = resources
  return result


def resource_spec(resources: Dict[str, Any]):
  """The KFP ResourceSpec that TFX's ``with_platform_config`` takes."""
  from kfp.pipeline_spec import pipeline_spec_pb2  # pylint: disable=g-import-not-at-top
  spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec()
  if "cpu" in resources:
    spec.cpu_limit = resources["cpu"]
  if "memory" in resources:
    spec.memory_limit = resources["memory"]
  if "gpu" in resources:
    spec.accelerator.type = resources["gpu_type"]
    spec.accelerator.count = resources["gpu"]
  return spec
