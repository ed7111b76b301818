"""``edgeticket export``: compaction, BN folding, ONNX, parity, INT8, as one Python call."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeticket import __version__, paths
from edgeticket.data.augment import to_input
from edgeticket.data.config import DataConfig
from edgeticket.data.dataset import PreparedData
from edgeticket.data.prepare import is_cache, resolve_data
from edgeticket.errors import UserError
from edgeticket.export.compact import (
    ParityError,
    check_compaction,
    compact,
    parity_scale,
    relative_error,
)
from edgeticket.export.config import ExportConfig
from edgeticket.export.fold import fold_batchnorm
from edgeticket.export.onnx_export import export_onnx, ort_session, run_ort
from edgeticket.export.quantize import calibration_images, quantize_int8
from edgeticket.fsio import save_torch, sha256_file, versions, write_json
from edgeticket.hparams import InputSize
from edgeticket.models.adapt import layer_widths
from edgeticket.models.card import ModelCard
from edgeticket.models.macs import count_macs, count_params
from edgeticket.models.store import load_model_dir
from edgeticket.tickets.mask import Mask
from edgeticket.tickets.sparsity import effective_sparsity
from edgeticket.train.evaluate import score_split
from edgeticket.train.metrics import METRIC_KEYS

PARITY_TOL = 1e-4
NO_GAIN_NOTE = ("unstructured sparsity: compaction removes only whole dead channels, and this ticket has "
                "{removed} of them; ONNX Runtime runs the remaining zeros at dense speed, so expect no speed-up.")


def open_export_data(src_meta: dict, data: str | Path | None, input_size: InputSize, progress: bool) -> tuple[PreparedData | None, str]:
    """The data for parity, calibration and drift: ``--data``, else what meta.json recorded."""
    if data is not None:
        return PreparedData(resolve_data(data, DataConfig(input_size=input_size), progress=progress)), str(data)
    rec = src_meta.get("data") or {}
    for cand in (rec.get("cache"), rec.get("source")):
        if not cand:
            continue
        p = Path(cand)
        try:
            if is_cache(p):
                d = PreparedData(p)
                if tuple(d.input_size) == tuple(input_size):
                    return d, str(p)
            elif p.exists():
                return PreparedData(resolve_data(p, DataConfig(input_size=input_size), progress=progress)), str(p)
        except UserError:
            continue
    return None, ""


def sample_inputs(data: PreparedData | None, input_size: tuple[int, int], mean, std, n: int = 4, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """A batch of random inputs, and one of real images when there is data."""
    g = torch.Generator().manual_seed(seed)
    batches = [("random", torch.randn(n, 3, *input_size, generator=g))]
    if data is not None:
        for split in ("val", "test", "train"):
            if data.count(split):
                rgb = data.load(split).rgb[:n] if split == "train" else next(data.iter_full(split, n))[0]
                batches.append(("real", to_input(rgb, mean, std)))
                break
    return batches


def onnx_metrics(sess, data: PreparedData, split: str, mean, std, batch_size: int = 8, limit: int | None = None) -> dict:
    return score_split(lambda x: torch.from_numpy(run_ort(sess, x.numpy())), data, split, batch_size, mean, std,
                       limit=limit)


def export(src: str | Path, out: str | Path, config: ExportConfig | None = None, *, data: str | Path | None = None,
           overwrite: bool = False, progress: bool = True) -> dict:
    """Export a finetune output or a search level/branch directory to ``out/model.onnx``.

    ``data`` (a dataset folder or cache) feeds parity, calibration and drift; by default the
    data the source was trained on, as its meta.json records.
    """
    from edgeticket.runs import claimed, staged

    cfg = config or ExportConfig()
    src, out = Path(src), Path(out)
    with claimed(out, "export", export_identity(src, cfg, data), overwrite=overwrite, resume_option=None,
                 inputs={"source model": src, "data folder": data}, stage=True) as claim:
        # the ONNX files, model.pt, meta.json and export.json are one unit: staged, then swapped in whole
        with staged(out) as stage:
            report = _moved(_export(src, stage, cfg, data, progress), str(stage), str(out.resolve()))
            write_json(stage / paths.EXPORT_JSON, report)
            claim.mark(stage)
        return report


def _moved(obj, old: str, new: str):
    """``obj`` with the staging folder's paths as they will be once it is swapped in."""
    if isinstance(obj, dict):
        return {k: _moved(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_moved(v, old, new) for v in obj]
    return new + obj[len(old):] if isinstance(obj, str) and obj.startswith(old) else obj


def export_identity(src: Path, cfg: ExportConfig, data) -> dict:
    """What an export is made from: the source's files, the settings and the data."""
    files = {name: sha256_file(src / name) for name in (paths.MODEL, paths.MASK, paths.META) if (src / name).is_file()}
    return {"source": files, "config": cfg.to_dict(), "data": None if data is None else str(Path(data).resolve())}


def _export(src: Path, out: Path, cfg: ExportConfig, data, progress: bool) -> dict:
    compact_model, int8 = cfg.compact, cfg.int8
    t0 = time.perf_counter()
    model, meta = load_model_dir(src)
    model.eval()
    mask = Mask.load(src / paths.MASK) if (src / paths.MASK).exists() else None
    if mask is not None:
        mask.check_fits(model, str(src / paths.MASK))
        mask.apply_(model)
    size = InputSize(*meta["input_size"])
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    channel_ticket = mask is not None and mask.is_channel_ticket
    if compact_model is None:
        compact_model = channel_ticket
    prepared, data_origin = open_export_data(meta, data, size, progress)
    if int8 and prepared is None:
        raise UserError(f"--int8: no data to calibrate on ({src / paths.META} records none that can be read); pass --data DIR.")
    if int8:
        check_drift_split(prepared, cfg.drift_split)
    inputs = sample_inputs(prepared, size, mean, std)
    notes = []
    if prepared is None:
        notes.append("no data could be read: parity was checked on random inputs only")

    before_widths = layer_widths(model)
    folded_dense = fold_batchnorm(model)
    macs_before, params_before = count_macs(folded_dense, size), count_params(folded_dense)
    report: dict = {"source": str(src), "arch": meta["arch"], "input_size": list(size), "data": data_origin}
    if compact_model:
        c = compact(model)
        report["compaction"] = {"parity": check_compaction(model, c, inputs, PARITY_TOL),
                                "groups_pruned": c.groups_pruned, "channels_removed": c.channels_removed,
                                "channels_total": c.channels_total}
        final = c.model.eval()
    else:
        final = model
    removed = report.get("compaction", {}).get("channels_removed", 0)
    if mask is not None and not channel_ticket:
        notes.append(NO_GAIN_NOTE.format(removed=removed))
    elif compact_model and removed == 0:
        notes.append("compaction found no dead channels: the exported model is as wide as the source")

    folded = fold_batchnorm(final)
    macs_after, params_after = count_macs(folded, size), count_params(folded)
    conv_before = sum(w.numel() for n, w in model.named_parameters() if n.endswith("weight") and w.dim() == 4)
    conv_after = sum(w.numel() for n, w in final.named_parameters() if n.endswith("weight") and w.dim() == 4)
    sparsity_u = mask.sparsity() if mask is not None else 0.0
    sparsity_e = effective_sparsity(mask, model) if mask is not None else 0.0
    sparsity_s = 1.0 - conv_after / conv_before
    source_sha = sha256_file(src / paths.MODEL)
    card = ModelCard(input_size=size, mean=mean, std=std, arch=meta["arch"], macs=macs_after, params=params_after,
                     sparsity=sparsity_e, sparsity_unstructured=sparsity_u, sparsity_structural=sparsity_s, level=meta.get("level"),
                     criterion=meta.get("criterion") or "", branch=meta.get("branch") or "", version=__version__,
                     source_sha256=source_sha, predicted_latency_ms=_predicted_latency(src), **describe(meta, prepared, cfg))
    report["input_dependence"] = check_input_dependence(folded, inputs, cfg.allow_constant, src)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / paths.ONNX
    staged = out / f".{paths.ONNX}.staged.tmp"  # becomes model.onnx only once it passes parity
    try:
        export_onnx(folded, staged, size, card.to_onnx_props(), card.doc_string())
        if cfg.simplify:
            notes.append(_simplify(staged, folded, inputs))
        parity = _ort_parity(staged, model, inputs)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, onnx_path)
    # The compacted model is itself a model directory: a plain state dict plus its widths.
    save_torch(out / paths.MODEL, {k: v.detach().cpu() for k, v in final.state_dict().items()})
    write_json(out / paths.META, {**meta, "widths": layer_widths(final), "exported_from": str(src),
                                  "source_sha256": source_sha})
    if not int8:
        (out / paths.ONNX_INT8).unlink(missing_ok=True)  # a stale INT8 file must not pass for this export's
    sess = ort_session(onnx_path)
    report.update({
        "onnx": str(onnx_path), "onnx_bytes": onnx_path.stat().st_size, "opset": 18, "parity": parity,
        "metadata": card.to_onnx_props(),
        "before": {"macs": macs_before, "params": params_before},
        "after": {"macs": macs_after, "params": params_after},
        "macs_ratio": macs_after / macs_before, "params_ratio": params_after / params_before,
        "widths": widths_report_from(before_widths, layer_widths(final)),
        "sparsity": sparsity_e, "sparsity_unstructured": sparsity_u, "sparsity_structural": sparsity_s,
    })
    if int8:
        report["int8"] = _int8(onnx_path, out / paths.ONNX_INT8, prepared, card, cfg, sess)
    report["notes"] = notes
    report["seconds"] = round(time.perf_counter() - t0, 2)
    report["versions"] = versions()
    write_json(out / paths.EXPORT_JSON, report)
    return report


def _ort_parity(path: Path, model, inputs) -> dict:
    """ONNX Runtime against PyTorch on the same random and real inputs; fail above 1e-4 of the
    reference output's spread (its std, floored at 1% of its maximum), so that a constant bias
    cannot hide a change."""
    sess = ort_session(path)
    parity = {}
    for label, x in inputs:
        with torch.no_grad():
            ref = model(x)
        abs_err, rel = relative_error(torch.from_numpy(run_ort(sess, x.numpy())), ref)
        parity[label] = {"max_abs": abs_err, "max_rel": rel, "scale": "std of the PyTorch output"}
        if rel > PARITY_TOL:
            raise ParityError(f"{path.parent / paths.ONNX}: ONNX Runtime differs from PyTorch by "
                              f"{rel:.2e} of the output's spread on {label} inputs (limit "
                              f"{PARITY_TOL:g}); the export is not faithful.")
    return parity


def _predicted_latency(src: Path) -> float | None:
    """A latency-budgeted search level's prediction (its sparsity.json), for the bench to set beside its measurement."""
    from edgeticket.fsio import read_json

    sp = src / paths.SPARSITY
    if not sp.exists():
        return None
    value = read_json(sp).get("predicted_latency_ms")
    return float(value) if isinstance(value, int | float) else None


CONSTANT_TOL = 1e-5  # of max |output|: float rounding of a depth map, far below any real image's effect


@torch.no_grad()
def check_input_dependence(model, inputs, allow: bool, src: Path) -> dict:
    """Refuse an export whose output is the same, to float rounding, for different images."""
    label, x = inputs[-1]  # the real images where there are any
    y = model(x).double().numpy()
    spread = float(np.abs(y - y[:1]).max()) if len(y) > 1 else float("nan")
    scale = max(float(np.abs(y).max()), 1e-12)
    constant = len(y) > 1 and spread <= CONSTANT_TOL * scale
    if constant and not allow:
        raise UserError(f"{src}: the exported model gives the same output, to float rounding, for {len(y)} different "
                        f"{label} images (largest difference {spread:.1e} m): its pruning may have "
                        "cut the path from input to output; pass --allow-constant to export it anyway.")
    return {"inputs": label, "images": len(y), "max_between_images": spread, "constant": constant}


def describe(meta: dict, data: PreparedData | None, cfg: ExportConfig) -> dict:
    """The card's self-description: training data, camera, depth range, licence, date."""
    from edgeticket.data.synth.camera import NYU_INTRINSICS
    from edgeticket.train.metrics import MAX_DEPTH, MIN_DEPTH

    rec = meta.get("data") or {}
    source = (data.meta.get("source") if data is not None else None) or rec.get("source") or ""
    kind = data.meta.get("source_kind", "") if data is not None else ""
    dataset = f"NYU Depth v2 layout{f' ({kind})' if kind else ''}: {Path(source).name}" if source else ""
    if dataset and rec.get("split_origin"):
        dataset += f", split {rec['split_origin']}"
    fx, fy, cx, cy = NYU_INTRINSICS
    return {
        "description": f"{meta['arch']} monocular depth from one RGB image, exported by edgeticket",
        "output_range": f"{MIN_DEPTH:g}-{MAX_DEPTH:g} m",
        "dataset": dataset,
        "camera": (f"NYU Depth v2 Kinect colour camera, fx={fx:.3f} fy={fy:.3f} cx={cx:.3f} cy={cy:.3f} at 640x480"
                   if dataset else ""),
        "license": cfg.license,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def widths_report_from(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, list[int]]:
    """{layer: [out channels before, after]} for every layer that got narrower."""
    return {k: [before[k][1], after[k][1]] for k in before if k in after and before[k][1] != after[k][1]}


DRIFT_MIN_IMAGES = 16


def _int8(fp32: Path, path: Path, data: PreparedData, card: ModelCard, cfg: ExportConfig, fp32_sess) -> dict:
    mean, std = card.mean, card.std
    split = cfg.drift_split
    check_drift_split(data, split)
    images = calibration_images(data, cfg.calib_images, card.input_size, mean, std)
    settings = quantize_int8(fp32, path, images, card, stride=cfg.calib_stride, reduce_range=cfg.reduce_range,
                             calib_method=cfg.calib_method, fp32_head=cfg.int8_fp32_head)
    drift = int8_drift(fp32_sess, ort_session(path), data, split, mean, std)
    if drift["images"] < DRIFT_MIN_IMAGES:
        drift["note"] = (f"measured on {drift['images']} {split} images (under {DRIFT_MIN_IMAGES}): the figure is "
                         "indicative only")
    return {"path": str(path), "bytes": path.stat().st_size, **settings, "drift": drift,
            "output_vs_fp32": drift.pop("output_vs_fp32")}


def check_drift_split(data: PreparedData, split: str) -> None:
    if not data.count(split):
        hint = "; pass --drift-split test to measure it on the test split" if split == "val" else ""
        raise UserError(f"--data {data.root}: the {split} split is empty, so INT8 drift cannot be measured on images "
                        f"calibration never saw{hint}.")


def int8_drift(fp32_sess, q, data: PreparedData, split: str, mean, std, batch_size: int = 8) -> dict:
    """Metrics of fp32 and INT8 on a split calibration never saw (it uses train), and how far
    the INT8 output moves from fp32's, in metres and relative to fp32's spread."""
    from edgeticket.train.metrics import MetricAccumulator

    acc32, acc8 = MetricAccumulator("cpu"), MetricAccumulator("cpu")
    max_abs, sum_abs, count, ref, images, peak = 0.0, 0.0, 0, [], 0, 0.0
    for rgb, gt in data.iter_full(split, batch_size):
        x = to_input(rgb, mean, std).numpy()
        a, b = run_ort(fp32_sess, x), run_ort(q, x)
        acc32.update(torch.from_numpy(a).float(), gt)
        acc8.update(torch.from_numpy(b).float(), gt)
        d = np.abs(a.astype(np.float64) - b)
        max_abs, sum_abs, count = max(max_abs, float(d.max())), sum_abs + float(d.sum()), count + d.size
        ref.append(a.astype(np.float64).ravel())
        images += len(x)
        peak = max(peak, float(np.abs(a).max()))
    m32, m8 = acc32.compute(), acc8.compute()
    spread = parity_scale(torch.from_numpy(np.concatenate(ref)))
    return {"split": split, "images": images, "calibration_split": "train",
            "fp32": m32, "int8": m8, "delta": {k: m8[k] - m32[k] for k in METRIC_KEYS},
            "output_vs_fp32": {"max_abs": max_abs, "mean_abs": sum_abs / max(count, 1),
                               "max_rel": max_abs / max(peak, 1e-12), "max_over_spread": max_abs / spread,
                               "split": split}}


def _simplify(path: Path, folded, inputs) -> str:
    """onnxslim, kept only where ORT parity holds afterwards."""
    try:
        import onnxslim
    except ImportError:
        return "--simplify: onnxslim is not installed (pip install onnxslim); the model was left as exported"
    import onnx

    with tempfile.TemporaryDirectory(dir=path.parent) as d:
        cand = Path(d) / "slim.onnx"
        onnx.save_model(onnxslim.slim(onnx.load(str(path))), str(cand))
        sess = ort_session(cand)
        for _, x in inputs:
            with torch.no_grad():
                _, rel = relative_error(torch.from_numpy(run_ort(sess, x.numpy())), folded(x))
            if rel > PARITY_TOL:
                return f"--simplify: onnxslim broke parity ({rel:.2e}); the model was left as exported"
        os.replace(cand, path)
    return "--simplify: onnxslim applied, parity kept"


__all__ = ["export", "ParityError"]
