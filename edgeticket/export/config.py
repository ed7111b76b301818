"""How to export: compaction, INT8 and its calibration, simplification."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.hparams import Hparams, hfield


@dataclass
class ExportConfig(Hparams):
    section = "export"

    compact: bool | None = hfield(None, help="Remove dead channels first (default: on for channel tickets).")
    int8: bool = hfield(False, help="Also write a static QDQ INT8 model, calibrated on training images.")
    calib_images: int = hfield(64, help="INT8 calibration images (a seeded sample of the training split).", low=1,
                               high=100_000)
    calib_method: str = hfield("minmax", help="INT8 activation ranges: minmax, percentile (99.999) or entropy.",
                               choices=("minmax", "percentile", "entropy"))
    reduce_range: str = hfield("auto", help="INT8 7-bit weights for CPUs without VNNI: on, off, or auto (this "
                               "machine's VNNI, which need not be the deployment target's).", choices=("auto", "on", "off"))
    int8_fp32_head: bool = hfield(True, help="Keep the head conv, the final resize and the depth output in fp32 "
                                  "(off quantizes them too, which steps and clips the depth).")
    drift_split: str = hfield("val", help="Where INT8 drift is measured: val (never seen by calibration) or test; an "
                              "empty val split is an error unless test is chosen.", choices=("val", "test"))
    allow_constant: bool = hfield(False, help="Export a model whose output does not depend on its input (refused "
                                  "by default: pruning may have cut the path from input to output).")
    license: str = hfield("MIT", help="The licence written into the ONNX metadata (edgeticket.license).")
    calib_stride: int = hfield(8, help="INT8 calibration collects ranges this many images at a time (bounds memory).",
                               low=1, high=4096)
    simplify: bool = hfield(False, help="Run onnxslim, kept only where parity holds.")
