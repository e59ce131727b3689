"""ONNX export of saved models, and running the exports with onnxruntime.

An export folder holds ``model.onnx`` (with ``model.onnx.data`` for weights over
1 GB), ``export.json`` (thresholds, working size and every setting predict needs,
never baked into the graph) and ``parity.json`` (measured differences from the
torch model). The graph takes (N, 3, S, S) float images in [0, 1] already resized
to the working size S, and returns scores (N,) and maps (N, S, S) with the method's
post-processing inside. Needs ``pip install adcore[onnx]``.
"""

from __future__ import annotations

from adcore.export.errors import ExportError
from adcore.export.graphs import NOT_EXPORTABLE, graph_for
from adcore.export.runtime import EXPORT_FILE, ONNX_FILE, OnnxModel, find_export, load_exported
from adcore.export.writer import BATCH_SIZES, EXPORT, PARITY_FILE, RTOL, export_model, measure_parity, probe_images

__all__ = ["BATCH_SIZES", "EXPORT", "EXPORT_FILE", "NOT_EXPORTABLE", "ONNX_FILE", "PARITY_FILE", "RTOL",
           "ExportError", "OnnxModel", "export_model", "find_export", "graph_for", "load_exported",
           "measure_parity", "probe_images"]
