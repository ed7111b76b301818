"""How to export: compaction, INT8 and its calibration, simplification."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.hparams import Hparams, hfield


@dataclass
class ExportConfig(Hparams):
    section = "export"

    compact: bool | None = hfield(None, help="Remove dead channels first (default: on for channel tickets).")
    int8: bool = hfield(False, help="Also write a static QDQ INT8 model, calibrated on training images.")
    calib_images: int = hfield(64, help="INT8 calibration images.", low=1, high=100_000)
    calib_stride: int = hfield(8, help="INT8 calibration collects ranges this many images at a time (bounds memory).",
                               low=1, high=4096)
    simplify: bool = hfield(False, help="Run onnxslim, kept only where parity holds.")
