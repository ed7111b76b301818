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
from edgeticket.export.compact import ParityError, check_compaction, compact, relative_error
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
                     source_sha256=source_sha, predicted_latency_ms=_predicted_latency(src))
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / paths.ONNX
    staged = out / f".{paths.ONNX}.staged.tmp"  # becomes model.onnx only once it passes parity
    try:
        export_onnx(folded, staged, size, card.to_onnx_props())
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
    """ONNX Runtime against PyTorch on the same random and real inputs; fail above 1e-4 relative."""
    sess = ort_session(path)
    parity = {}
    for label, x in inputs:
        with torch.no_grad():
            ref = model(x)
        abs_err, rel = relative_error(torch.from_numpy(run_ort(sess, x.numpy())), ref)
        parity[label] = {"max_abs": abs_err, "max_rel": rel}
        if rel > PARITY_TOL:
            raise ParityError(f"{path.parent / paths.ONNX}: ONNX Runtime differs from PyTorch by {rel:.2e} relative on "
                              f"{label} inputs (limit {PARITY_TOL:g}); the export is not faithful.")
    return parity


def _predicted_latency(src: Path) -> float | None:
    """A latency-budgeted search level's prediction (its sparsity.json), for the bench to set beside its measurement."""
    from edgeticket.fsio import read_json

    sp = src / paths.SPARSITY
    if not sp.exists():
        return None
    value = read_json(sp).get("predicted_latency_ms")
    return float(value) if isinstance(value, int | float) else None


def widths_report_from(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, list[int]]:
    """{layer: [out channels before, after]} for every layer that got narrower."""
    return {k: [before[k][1], after[k][1]] for k in before if k in after and before[k][1] != after[k][1]}


def _int8(fp32: Path, path: Path, data: PreparedData, card: ModelCard, cfg: ExportConfig, fp32_sess) -> dict:
    mean, std = card.mean, card.std
    images = calibration_images(data, cfg.calib_images, card.input_size, mean, std)
    settings = quantize_int8(fp32, path, images, card.replace(precision="int8-qdq").to_onnx_props(),
                             stride=cfg.calib_stride)
    q = ort_session(path)
    drift = {"split": "val" if data.count("val") else "test"}
    split = drift["split"]
    if data.count(split):
        m32 = onnx_metrics(fp32_sess, data, split, mean, std)
        m8 = onnx_metrics(q, data, split, mean, std)
        drift.update({"fp32": m32, "int8": m8, "delta": {k: m8[k] - m32[k] for k in METRIC_KEYS}})
    x = torch.from_numpy(images[: min(4, len(images))])
    a, b = run_ort(fp32_sess, x.numpy()), run_ort(q, x.numpy())
    abs_err = float(np.abs(a - b).max())
    return {"path": str(path), "bytes": path.stat().st_size, **settings, "drift": drift,
            "output_vs_fp32": {"max_abs": abs_err, "mean_abs": float(np.abs(a - b).mean()),
                               "max_rel": abs_err / max(float(np.abs(a).max()), 1e-12)}}


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
