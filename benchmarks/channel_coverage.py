"""Which keras.applications image classifiers channel pruning can narrow, and how far.

    .venv/bin/python -m benchmarks.channel_coverage                       # tf_keras, all
    env -u TF_USE_LEGACY_KERAS .venv/bin/python -m benchmarks.channel_coverage --backend keras3
    .venv/bin/python -m benchmarks.channel_coverage --models EfficientNetB0 MobileNetV3Small

For every image classifier in ``tf_keras.applications`` (or Keras 3's
``keras.applications``), built with ``weights=None``, ``classes=10`` and a 64x64x3
input (75x75 where the model needs more), one at a time with the session cleared
in between:

- the share of non-classifier producer channels prunable: output channels of the
  Dense / Conv / SeparableConv layers, the last one (the classifier) left out,
  that the channel analysis leaves removable;
- what keeps the others (the most frequent blocking layers, from the analysis'
  reasons), or the error naming the layer that stops the model;
- 50% of the channels chosen (per layer, L1) and the narrow model rebuilt: it must
  run, have the kept widths, and compute what the wide model with those channels
  zeroed computes (largest absolute difference on one random image; ``--no-exact``
  skips that second rebuild);
- parameters before and after.

Prints a Markdown table (the one in ``components/pruner/README.md``); ``--out``
also writes the rows as JSON. Not a test: a coverage measurement.
"""

# pylint: disable=g-import-not-at-top

import argparse
import collections
import gc
import json
import re
import sys
import time

# The largest of each family: tens of seconds to minutes each here, and the
# smaller members of the family build the same blocks.
SKIP_BY_DEFAULT = (
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge", "EfficientNetB5",
    "EfficientNetB6", "EfficientNetB7", "EfficientNetV2M", "EfficientNetV2L",
    "NASNetLarge", "ResNetRS152", "ResNetRS200", "ResNetRS270", "ResNetRS350",
    "ResNetRS420", "RegNetX064", "RegNetX080", "RegNetX120", "RegNetX160",
    "RegNetX320", "RegNetY064", "RegNetY080", "RegNetY120", "RegNetY160",
    "RegNetY320")


def _backend(name: str):
  """(applications module, keras module, channel API) of one backend."""
  from tfx_compression.components.pruner import channel_choice
  if name == "tf_keras":
    import tf_keras as k
    from tfx_compression.components.pruner import channel_graph, channel_rebuild
    api = dict(analyze=channel_graph.analyze,
               select=channel_choice.select_channels,
               rebuild=channel_rebuild.rebuild_narrow,
               zero=channel_rebuild.zero_channels)
  else:
    import keras as k
    from tfx_compression.components.pruner import keras3_channels as kc
    api = dict(analyze=kc.analyze, select=kc.select_channels,
               rebuild=kc.rebuild_narrow, zero=kc.zero_channels)
  return k.applications, k, api


def model_names(apps) -> list:
  return sorted(n for n in dir(apps) if n[:1].isupper()
                and callable(getattr(apps, n)))


def _build(apps, name: str):
  for size in (64, 75):
    try:
      return getattr(apps, name)(weights=None, classes=10,
                                 input_shape=(size, size, 3)), size
    except ValueError as e:
      if size == 75 or "input" not in str(e).lower():
        raise
  raise AssertionError("unreachable")


_PRODUCERS = ("Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D",
              "SeparableConv2D")


def _width(layer) -> int:
  return int(getattr(layer, "units", None) or layer.filters)


_LAYER_IN_REASON = re.compile(r"feed (\w+) layer '([^']+)'")


def _blockers(graph, classifier: str) -> str:
  """The layer types named most often in the reasons channels are kept."""
  counts = collections.Counter()
  reasons = {**graph.skipped, **graph.partial}
  reasons.pop(classifier, None)
  for reason in reasons.values():
    m = _LAYER_IN_REASON.search(reason)
    if m:
      counts[m.group(1)] += 1
    elif "does not map 0 to 0" in reason:
      counts["activation not 0->0"] += 1
    elif "model output" in reason:
      continue
    else:
      counts[reason[:60]] += 1
  return ", ".join(f"{k} ({v})" for k, v in counts.most_common(3))


def measure(apps, k, api, name: str, exact: bool) -> dict:
  import numpy as np
  from tfx_compression.components.pruner import channel_graph
  start = time.time()
  model, size = _build(apps, name)
  producers = [l for l in model.layers if type(l).__name__ in _PRODUCERS]
  classifier = producers[-1].name
  total = sum(_width(l) for l in producers[:-1])
  row = {"model": name, "input": size, "params": int(model.count_params()),
         "channels": total}
  try:
    graph = api["analyze"](model)
  except channel_graph.ChannelPruningError as e:
    row.update(prunable=0, share=0.0, error=str(e)[:300])
    return row
  prunable = sum(int((graph.roots[p.ids] != channel_graph.FIXED).sum())
                 for n, p in graph.producers.items() if n != classifier)
  row.update(prunable=prunable, share=prunable / max(1, total),
             kept_by=_blockers(graph, classifier), analysis_s=round(time.time() - start, 1))
  kept = api["select"](model, graph, 0.5)
  narrow = api["rebuild"](graph, kept)
  widths_ok = all(_width(narrow.get_layer(n)) == len(v) for n, v in kept.items())
  x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype("float32")
  y = np.asarray(narrow(x, training=False))
  row.update(params_50=int(narrow.count_params()), widths_ok=widths_ok,
             runs=bool(y.shape == (1, 10) and np.isfinite(y).all()))
  if exact:
    wide = api["rebuild"](graph, {})
    api["zero"](wide, graph, kept)
    zeroed = np.asarray(wide(x, training=False))
    row["max_diff"] = float(np.abs(zeroed - y).max())
    # Not vacuous: zeroing the channels changed the output.
    row["changed"] = float(np.abs(np.asarray(model(x, training=False))
                                  - zeroed).max())
    del wide
  del narrow, model, graph
  row["seconds"] = round(time.time() - start, 1)
  return row


def _table_row(r: dict) -> str:
  if "error" in r:
    return (f"| {r['model']} | {r['input']} | {r['channels']:,} | 0 (0%) | - | "
            f"fails: {r['error'][:160]} |")
  diff = (f"{r['max_diff']:.0e} (zeroing moved it {r['changed']:.0e})"
          if "max_diff" in r else "-")
  check = "runs" if r["runs"] and r["widths_ok"] else "BROKEN"
  return (f"| {r['model']} | {r['input']} | {r['channels']:,} | "
          f"{r['prunable']:,} ({100 * r['share']:.1f}%) | "
          f"{r['params'] / 1e6:.2f}M -> {r['params_50'] / 1e6:.2f}M, {check}, "
          f"diff {diff}, {r['seconds']:.0f} s | {r['kept_by'] or '-'} |")


HEADER = ("| model | input | non-classifier producer channels | prunable | "
          "50% rebuilt: params, check, max diff vs masked wide | kept by |\n"
          "|---|---|---|---|---|---|")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--backend", choices=("tf_keras", "keras3"),
                      default="tf_keras")
  parser.add_argument("--models", nargs="*", help="default: every classifier")
  parser.add_argument("--include-largest", action="store_true",
                      help=f"also {', '.join(SKIP_BY_DEFAULT)}")
  parser.add_argument("--no-exact", action="store_true")
  parser.add_argument("--out", help="JSON file for the rows")
  args = parser.parse_args(argv)
  apps, k, api = _backend(args.backend)
  names = args.models or [n for n in model_names(apps)
                          if args.include_largest or n not in SKIP_BY_DEFAULT]
  rows = []
  print(f"backend: {args.backend} (keras {k.__version__})", flush=True)
  print(HEADER, flush=True)
  for name in names:
    try:
      row = measure(apps, k, api, name, exact=not args.no_exact)
    except Exception as e:  # pylint: disable=broad-except  # A row, not a stop.
      row = {"model": name, "input": "-", "channels": 0,
             "error": f"{type(e).__name__}: {e}"}
    rows.append(row)
    print(_table_row(row), flush=True)
    k.backend.clear_session()
    gc.collect()
  if args.out:
    with open(args.out, "w") as f:
      json.dump(rows, f, indent=1)
  not_measured = [n for n in model_names(apps) if n not in names]
  if not_measured:
    print(f"not measured: {', '.join(not_measured)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
