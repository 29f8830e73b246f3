"""The user's ``module_file``: the one place the components run user code.

Each component names what it reads from the module (the Pruner ``input_fn``
and ``custom_objects``; the Quantizer and the CompressionEvaluator
``custom_objects``) and decides which are required; importing the file and the
``custom_objects`` contract are the same for all three:

* the file is imported once per call with TFX's own loader (the Trainer's), so
  a ``gs://`` path works on Kubeflow as a local one does;
* ``custom_objects`` is a dict of name -> Keras class or function, or a function
  returning one.

Example:

    found = user_module.load(config.module_file, ("input_fn", "custom_objects"))
    objects = user_module.custom_objects(found["custom_objects"], config.module_file)
"""

from typing import Any, Dict, Optional, Sequence, Type


def load(module_file: str, names: Sequence[str],
         error: Type[Exception] = ValueError) -> Dict[str, Any]:
  """{name: the module's object, or None when it does not define it}.

  Args:
    module_file: path of the user's Python file (local or ``gs://``).
    names: the names the component reads.
    error: the component's error class for a file that cannot be imported
      (a ``ValueError``).

  Raises:
    error: the file does not exist or cannot be imported; the message names
      ``module_file``.
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tfx.utils import import_utils
  # pylint: enable=g-import-not-at-top
  problem = None
  if not tf.io.gfile.exists(module_file):
    # TFX would report "<name> in <path> not found": say it is the file.
    problem = "there is no such file"
  else:
    try:
      # The module's namespace: one import, whatever names are read from it.
      namespace = import_utils.import_func_from_source(module_file, "__dict__")
    except (ImportError, OSError) as e:
      problem = str(e)
  if problem is not None:
    raise error(f"`module_file`={module_file!r} could not be imported: "
                f"{problem}. Give the path of a Python file the step can read.")
  return {name: namespace.get(name) for name in names}


def custom_objects(value: Any, module_file: str,
                   error: Type[Exception] = TypeError) -> Optional[Dict[str, Any]]:
  """The ``custom_objects`` a module defines (None if it defines none).

  Raises:
    error: it is neither a dict nor a function returning one.
  """
  if callable(value):
    value = value()
  if value is not None and not isinstance(value, dict):
    raise error(f"`custom_objects` in {module_file!r} must be a dict of "
                "name -> class or function (or a function returning one), "
                f"got {type(value).__name__}.")
  return value
