"""Beam's DaskRunner, usable from a TFX component's ``beam_pipeline_args``.

Apache Beam (2.59, the version TFX 1.16 brings) ships a DaskRunner that hands
*every* pipeline option set to something other than its default to
``dask.distributed.Client(...)``, which refuses what it does not know. Through
TFX there are always some: ``--runner`` itself, and the ``--labels`` and
``--extra_package`` that TFX's BaseBeamExecutor adds to the component's
beam_pipeline_args, so ``--runner=DaskRunner`` fails with "Unexpected keyword
arguments: ['extra_packages', 'labels', 'runner']". (Beam 2.59 does not know the
short name ``DaskRunner`` either: it wants the class's full path.) This runner is
Beam's, given only the Dask options (``--dask_client_address``,
``--dask_connection_timeout``, ``--dask_scheduler_file``, ``--dask_client_name``,
``--dask_connection_limit``, and in newer Beams ``--dask_npartitions`` /
``--dask_partition_size``; when neither is given it sets
``--dask_partition_size=1``: Beam 2.77's default, 128 elements per partition,
puts the evaluator's job, one element per eval file, on a single worker). It
also waits for the job without Beam 2.59's call
``Client.wait_for_workers(timeout=...)``, which distributed 2024 refuses
("missing 1 required positional argument: 'n_workers'"), and closes its Client
when the job ends.

Example (the CompressionEvaluator's Beam job on a dask.distributed cluster):

    evaluator.with_beam_pipeline_args([
        "--runner=tfx_compression.components.compression_evaluator."
        "dask_runner.DaskRunner",
        "--dask_client_address=tcp://scheduler:8786"])

Needs ``dask`` and ``distributed`` (``pip install "tfx-compression[dask]"``).
"""

import argparse

from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.runner import PipelineState

FULL_NAME = f"{__name__}.DaskRunner"


def dask_only_options(options) -> beam_dask.DaskOptions:
  """A DaskOptions holding only ``options``' Dask settings that are not defaults.

  Example:

      opts = PipelineOptions(["--dask_client_address=tcp://h:8786",
                              "--labels=a=b"])
      dask_only_options(opts).get_all_options(drop_default=True)
      # {'address': 'tcp://h:8786'}
  """
  parser = argparse.ArgumentParser()
  beam_dask.DaskOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  defaults = vars(parser.parse_args([]))
  given = options.view_as(beam_dask.DaskOptions)
  own = beam_dask.DaskOptions([])
  for dest, default in defaults.items():
    value = getattr(given, dest)
    if value != default:
      setattr(own, dest, value)
  if ({"npartitions", "partition_size"} <= set(defaults)
      and own.npartitions is None and own.partition_size is None):
    # Beams whose DaskRunner partitions Create's elements (2.77: 128 per
    # partition unless told) would run the evaluator's whole job, one element
    # per eval file, on one worker. One element per partition, as Beam 2.59
    # always did.
    own.partition_size = 1
  return own


class _Result(beam_dask.DaskRunnerResult):
  """Beam's result: waits for the job's futures, then closes the Client."""

  def wait_until_finish(self, duration=None):
    from dask import distributed  # pylint: disable=g-import-not-at-top
    try:
      # Beam's duration is in milliseconds; a job not done by then raises.
      distributed.wait(self.futures,
                       timeout=None if duration is None else duration / 1000)
      self.client.gather(self.futures, errors="raise")
      self._state = PipelineState.DONE
    except Exception:  # re-raised; the state must say the job failed
      self._state = PipelineState.FAILED
      raise
    finally:
      self.client.close()
    return self._state


class DaskRunner(beam_dask.DaskRunner):
  """Beam's DaskRunner, handed only the Dask options (see the module's doc)."""

  def run_pipeline(self, pipeline, options):
    result = super().run_pipeline(pipeline, dask_only_options(options))
    return _Result(result.client, result.futures)
