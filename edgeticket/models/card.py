"""The model card: what an exported model needs to be used, from the file alone.

``ModelCard`` is the one place that knows the ONNX metadata schema (``edgeticket.*`` keys in
``metadata_props``): export writes it with ``to_onnx_props()``, the bench reads it back with
``from_onnx_props()``, and ``doc_string()`` says the same in one paragraph. The input is NCHW
float32 RGB scaled by ``pixel_scale`` and normalised with ``mean``/``std``, the whole frame
resized bilinearly (``resize``); the output is depth in ``output_units``, N x 1 x H x W at the
input's resolution. The INT8 file adds ``edgeticket.int8.calibration`` (JSON).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from edgeticket.errors import UserError
from edgeticket.hparams import InputSize

PREFIX = "edgeticket."
RGB = tuple[float, float, float]
RESIZE = "bilinear (align_corners=False), the whole frame to input_size, no crop"
KEYS = {"int8_calibration": "int8.calibration"}  # a field whose key is not its name
INT8_KEY = PREFIX + KEYS["int8_calibration"]


def key_of(name: str) -> str:
    return PREFIX + KEYS.get(name, name)


def parse_rgb(text, name: str = "value", positive: bool = False) -> RGB:
    """'0.485,0.456,0.406' (or a list of three numbers) -> three finite floats."""
    try:
        vals = tuple(float(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ValueError("give three comma-separated numbers, e.g. 0.485,0.456,0.406")
    if positive and not all(v > 0 for v in vals):
        raise ValueError("each of the three numbers must be > 0")
    return vals  # type: ignore[return-value]


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6f}"
    return str(v)


@dataclass
class ModelCard:
    input_size: InputSize
    mean: RGB
    std: RGB
    arch: str = ""
    layout: str = "NCHW"
    color_order: str = "RGB"
    pixel_scale: str = "1/255"  # uint8 pixel values times this, then (x - mean) / std
    output_units: str = "metres"
    macs: int | None = None  # one image, after compaction and BN folding
    params: int | None = None
    sparsity: float | None = None  # effective: prunable weights masked or in a dead channel (tickets.sparsity)
    sparsity_unstructured: float | None = None  # the mask's own zeros
    sparsity_structural: float | None = None
    level: int | None = None
    criterion: str = ""
    branch: str = ""
    precision: str = "fp32"
    predicted_latency_ms: float | None = None  # a latency-budgeted search's prediction for this ticket
    version: str = ""
    source_sha256: str = ""
    task: str = "monocular-depth"
    description: str = ""
    resize: str = RESIZE
    output: str = "depth, N x 1 x H x W at the input's H x W, in output_units"
    output_range: str = ""  # the ground-truth depths the model was trained on, e.g. "0.001-10 m"
    dataset: str = ""
    camera: str = ""  # the training camera's intrinsics where known
    license: str = ""
    date: str = ""  # of the export, ISO 8601
    int8_calibration: str = ""  # JSON of the INT8 settings, in an INT8 file only
    extra: dict[str, str] = field(default_factory=dict)  # keys this version does not know, kept as they are

    def __post_init__(self):
        self.input_size = InputSize(*self.input_size)
        self.mean, self.std = tuple(self.mean), tuple(self.std)

    # -- writing --------------------------------------------------------------------------
    def to_onnx_props(self) -> dict[str, str]:
        props = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name in ("mean", "std"):
                v = ",".join(f"{x:g}" for x in v)
            if f.name == "int8_calibration" and not v:
                continue  # only an INT8 file carries it
            props[key_of(f.name)] = _fmt(v)
        props.update({PREFIX + k: v for k, v in self.extra.items()})
        return props

    def replace(self, **changes) -> ModelCard:
        return dataclasses.replace(self, **changes)

    # -- reading --------------------------------------------------------------------------
    @classmethod
    def from_onnx_props(cls, props: dict[str, str], where: str) -> ModelCard | None:
        """The card of an ONNX file's metadata; None for a model without edgeticket metadata.

        A file that has the keys but bad values is refused with a message naming the key.
        """
        by_key = {v: k for k, v in KEYS.items()}
        own = {by_key.get(k.removeprefix(PREFIX), k.removeprefix(PREFIX)): v for k, v in props.items()
               if k.startswith(PREFIX)}
        if not {"input_size", "mean", "std"} <= own.keys():
            return None
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict = {"extra": {k: v for k, v in own.items() if k not in names}}
        for key in names & own.keys():
            try:
                kwargs[key] = _parse_prop(key, own[key])
            except ValueError as e:
                raise UserError(f"{where}: metadata {key_of(key)} = {own[key]!r}: {e}.") from None
        return cls(**kwargs)

    def doc_string(self) -> str:
        """One paragraph for a deployer who has only the file: what goes in and what comes out."""
        h, w = self.input_size
        mean = ",".join(f"{x:g}" for x in self.mean)
        std = ",".join(f"{x:g}" for x in self.std)
        text = (f"{self.arch or 'FCRN'} monocular depth ({self.precision}). Input 'input': float32 {self.layout} "
                f"N x 3 x {h} x {w}, {self.color_order} colour order, uint8 pixels times {self.pixel_scale}, then "
                f"(x - mean) / std per channel with mean {mean} and std {std}; the whole frame resized to {h}x{w} "
                f"({self.resize}). Output 'depth': {self.output}, {self.output_units}")
        text += f", trained on depths {self.output_range}." if self.output_range else "."
        if self.dataset:
            text += f" Trained on {self.dataset}" + (f"; camera {self.camera}." if self.camera else ".")
        return text + " Every setting is in the edgeticket.* metadata_props."

    def int8_settings(self) -> dict:
        """The INT8 calibration settings this file records ({} for an fp32 file)."""
        import json

        return json.loads(self.int8_calibration) if self.int8_calibration else {}


def _parse_prop(key: str, text: str):
    if key == "input_size":
        return InputSize.parse(text)
    if key == "mean":
        return parse_rgb(text)
    if key == "std":
        return parse_rgb(text, positive=True)
    if key in ("macs", "params", "level"):
        return int(text) if text != "" else None
    if key in ("sparsity", "sparsity_unstructured", "sparsity_structural", "predicted_latency_ms"):
        return float(text) if text != "" else None
    return text
