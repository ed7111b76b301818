"""Structural compaction with torch-pruning, BN folding, ONNX export with parity checks, INT8.

``edgeticket.export(src, out, ExportConfig(...))`` calls ``edgeticket.export.api.export``.
"""

from edgeticket._callable import make_callable

make_callable(__name__, "edgeticket.export.api:export")
