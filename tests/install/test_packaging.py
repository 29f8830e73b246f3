"""What a user's `pip install tfx-compression` puts where, and what it leaves alone.

The wheel is built from the working tree (or, under `make test-current`, is the wheel
that was installed: TFX_COMPRESSION_WHEEL names it).
"""

import email.parser
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Packages whose version a team's TFX environment fixes; installing us must not move them.
STACK = ["tfx", "tensorflow", "tf-keras", "keras", "tensorflow-model-optimization",
         "apache-beam", "ml-metadata", "tensorflow-transform",
         "tensorflow-model-analysis", "kfp", "numpy", "protobuf", "pyarrow"]


def _normalize(name: str) -> str:
  return name.lower().replace("_", "-").replace(".", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
  given = os.environ.get("TFX_COMPRESSION_WHEEL")
  if given:
    return given
  if not os.path.isfile(os.path.join(ROOT, "pyproject.toml")) or not os.path.isdir(
      os.path.join(ROOT, "components")):
    pytest.skip("no source tree to build from and no TFX_COMPRESSION_WHEEL")
  # A copy of what the wheel is built from: building in the tree would race other runs.
  src = tmp_path_factory.mktemp("src")
  for name in ["pyproject.toml", "README.md"]:
    shutil.copy(os.path.join(ROOT, name), src)
  for name in ["components", "pipelines", "tfx_compression"]:
    shutil.copytree(os.path.join(ROOT, name), src / name,
                    ignore=shutil.ignore_patterns("__pycache__"))
  out = tmp_path_factory.mktemp("dist")
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
       "--no-build-isolation", "-w", str(out), str(src)],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (built,) = [f for f in os.listdir(out) if f.endswith(".whl")]
  return str(out / built)


def metadata(wheel_path: str):
  with zipfile.ZipFile(wheel_path) as z:
    (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(z.read(name).decode())


def test_wheel_installs_only_tfx_compression(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
  tops = {n.split("/")[0] for n in names}
  assert {t for t in tops if not t.endswith(".dist-info")} == {"tfx_compression"}
  assert not any(n.startswith(("components/", "pipelines/")) for n in names)
  # The repository's folders are inside, under our name.
  for path in ["tfx_compression/__init__.py",
               "tfx_compression/components/common/tflite_runtime.py",
               "tfx_compression/components/pruner/executor.py",
               "tfx_compression/components/quantizer/executor.py",
               "tfx_compression/components/compression_evaluator/executor.py",
               "tfx_compression/components/compression_planner/executor.py",
               "tfx_compression/pipelines/local_runner.py",
               "tfx_compression/pipelines/trainers/digits_trainer.py"]:
    assert path in names, path


def test_dependencies_are_ranges_that_cover_both_tested_sets(wheel):
  requires = [Requirement(r) for r in metadata(wheel).get_all("Requires-Dist")]
  base = {_normalize(r.name): r for r in requires if r.marker is None}
  assert not [str(r) for r in base.values() if "==" in str(r.specifier)]
  tested = {"tfx": ["1.16.0", "1.21.0"], "tensorflow": ["2.16.2", "2.21.0"],
            "tf-keras": ["2.16.0", "2.21.0"],
            "tensorflow-model-optimization": ["0.8.0", "0.8.1"],
            "apache-beam": ["2.59.0", "2.77.0"], "tensorboard": ["2.16.2", "2.21.0"]}
  for name, versions in tested.items():
    assert name in base, f"{name} is not a dependency"
    for version in versions:
      assert base[name].specifier.contains(version), (name, version)
  # Beyond what is tested, pip must not pick a TFX or TensorFlow we never ran.
  assert not base["tfx"].specifier.contains("1.22.0")
  assert not base["tensorflow"].specifier.contains("2.22.0")


def test_installing_the_wheel_moves_nothing_of_the_tfx_environment(wheel):
  """pip's own plan for `pip install WHEEL` in this environment (TFX 1.16 in the
  project's venv, 1.21 under make test-current): nothing of the stack changes."""
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
       "--report", "-", wheel],
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  plan = {_normalize(i["metadata"]["name"]): i["metadata"]["version"]
          for i in json.loads(proc.stdout)["install"]}
  assert not set(plan) & set(STACK), plan


def test_a_users_own_components_package_first_on_the_path(tmp_path):
  """A TFX project's own components/ and pipelines/ folders, first on sys.path."""
  for package in ["components", "pipelines"]:
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(f"OWNER = 'user {package}'\n")
  script = textwrap.dedent("""
      import components, pipelines
      import tfx_compression
      from tfx_compression import Pruner, Quantizer, CompressionEvaluator, add_compression
      from tfx_compression.components.pruner import executor
      from tfx_compression.pipelines import local_runner
      import tfx_compression.components as ours
      assert components.OWNER == 'user components', components.__file__
      assert pipelines.OWNER == 'user pipelines', pipelines.__file__
      assert ours is not components
      print(Pruner.__module__, executor.Executor.__module__)
  """)
  env = dict(os.environ, PYTHONPATH=str(tmp_path), CUDA_VISIBLE_DEVICES="")
  proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["tfx_compression.components.pruner.component",
                                 "tfx_compression.components.pruner.executor"]


def test_the_installed_tfx_is_the_expected_one():
  """Under make test-current: the wheel ran beside TFX 1.21 and left it there."""
  expected = os.environ.get("TFX_COMPRESSION_EXPECT_TFX")
  if not expected:
    pytest.skip("TFX_COMPRESSION_EXPECT_TFX is set by make test-current")
  import tfx  # pylint: disable=g-import-not-at-top
  import tfx_compression  # pylint: disable=g-import-not-at-top
  assert tfx.__version__ == expected
  # The installed copy, not a source tree.
  assert os.sep + "site-packages" + os.sep in tfx_compression.__file__
