"""The whole chain from one TOML config: data, dense fine-tune, IMP searches, baselines, the best
ticket's fine-tune, export and bench. ``edgeticket demo`` runs the shipped ``demo`` preset.

Resumable stage by stage: ``OUT/pipeline.json`` records each finished stage, a rerun skips
those, and an interrupted stage continues (the search and the fine-tunes resume from their
own checkpoints). The stages call the same Python API as the individual commands.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import read_json, write_json

PRESETS = ("demo", "nyu-fcrn50")
STAGES = ("data", "prepare", "dense", "search", "search_unstructured", "branches", "select", "ticket",
          "export", "bench")


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise UserError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}.")
    return Path(str(resources.files("edgeticket.presets").joinpath(f"{name}.toml")))


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file; see `edgeticket pipeline --help` or the presets.")
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e}).") from None
    for section in ("run", "data", "model", "dense", "search", "export", "bench"):
        if section not in cfg:
            raise UserError(f"{path}: has no [{section}] section; start from a shipped preset (edgeticket/presets/).")
    cfg["_path"] = str(path)
    return cfg


@dataclass
class Pipeline:
    cfg: dict
    out: Path
    device: str | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    state: dict = field(default_factory=dict)

    # -- state --------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / paths.PIPELINE_STATE

    def load_state(self) -> None:
        self.state = read_json(self.state_path) if self.state_path.exists() else {"stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.state.get("stages", {})

    def mark(self, stage: str, info: dict, seconds: float) -> None:
        self.state.setdefault("stages", {})[stage] = {**info, "seconds": round(seconds, 1)}
        write_json(self.state_path, self.state)

    # -- helpers ------------------------------------------------------------------------
    def _train_cfg(self, section: dict):
        from edgeticket.train.trainer import TrainConfig

        base = dict(self.cfg.get("train", {}))
        base.update({k: v for k, v in section.items() if k in TrainConfig.__dataclass_fields__})
        base.setdefault("seed", self.cfg["run"].get("seed", 0))
        return TrainConfig.from_dict(base)

    @property
    def dev(self) -> str:
        return self.device or self.cfg["run"].get("device", "cpu")

    @property
    def input_size(self) -> tuple[int, int]:
        from edgeticket.data.geometry import parse_size

        return parse_size(self.cfg["data"].get("input_size", "228x304"), "[data] input_size")

    def data_dir(self) -> Path:
        src = self.cfg["data"].get("source", "synth")
        return self.out / "data" / "synth" if src == "synth" else Path(src)

    # -- stages -------------------------------------------------------------------------
    def stage_data(self) -> dict:
        d = self.cfg["data"]
        if d.get("source", "synth") != "synth":
            from edgeticket.data.nyu import open_with_split

            src, split = open_with_split(self.data_dir())
            return {"dataset": str(self.data_dir()), "frames": len(src), "split": split.origin}
        from edgeticket.data.synth import write_synthetic

        target = self.data_dir()
        from edgeticket.data.nyu import LABELED_FILE

        if (target / LABELED_FILE).exists() and (target / "splits.mat").exists():
            return {"dataset": str(target), "reused": True}
        return write_synthetic(target, int(d.get("synth_frames", 96)), int(d.get("seed", 0)), progress=self.progress)

    def stage_prepare(self) -> dict:
        from edgeticket.data.prepare import resolve_data

        root = resolve_data(self.data_dir(), self.input_size, float(self.cfg["data"].get("val_fraction", 0.1)),
                            int(self.cfg["run"].get("seed", 0)), progress=self.progress)
        return {"cache": str(root)}

    def cache(self) -> str:
        return self.state["stages"]["prepare"]["cache"]

    def stage_dense(self) -> dict:
        from edgeticket.train.finetune import finetune

        m, d = self.cfg["model"], self.cfg["dense"]
        out = self.out / "finetune" / "dense"
        res = finetune(self.cache(), m["arch"], out, self._train_cfg(d), pretrained=m.get("pretrained", "none"),
                       device=self.dev, resume=True, progress=self.progress)
        return {"path": str(out), "val": res.val, "test": res.test}

    def _search(self, section: dict, name: str) -> dict:
        from edgeticket.tickets.imp import SearchConfig, search

        m = self.cfg["model"]
        cfg = SearchConfig(
            arch=m["arch"], pretrained=m.get("pretrained", "none"), levels=int(section.get("levels", 4)),
            rate=float(section.get("rate", 0.2)), criterion=section.get("criterion", "channel"),
            scope=section.get("scope", "all"), include_conv1=bool(section.get("include_conv1", False)),
            round_to=int(section.get("round_to", 8)), rewind=section.get("rewind", "pretrained"),
            target_sparsity=section.get("target_sparsity"), input_size=self.input_size,
            val_fraction=float(self.cfg["data"].get("val_fraction", 0.1)), train=self._train_cfg(section),
        )
        out = self.out / name
        summary = search(self.cache(), cfg, out, device=self.dev, resume=True, progress=self.progress)
        return {"path": str(out), "levels": len([r for r in summary["rows"] if not r["branch"]])}

    def stage_search(self) -> dict:
        return self._search(self.cfg["search"], "search")

    def stage_search_unstructured(self) -> dict:
        section = self.cfg.get("search_unstructured")
        if not section:
            return {"skipped": "no [search_unstructured] section"}
        return self._search(section, "search_unstructured")

    def stage_select(self) -> dict:
        """The best ticket by validation δ1 among the pruned levels (never by test)."""
        from edgeticket.tickets.summary import collect_rows

        rows = [r for r in collect_rows(self.out / "search") if not r["branch"] and r["level"] > 0]
        if not rows:
            raise UserError(f"{self.out / 'search'}: has no pruned level to choose a ticket from; use levels >= 2.")
        best = max(rows, key=lambda r: (r["val"].get("delta1", -1), -r["val"].get("rmse", 1e9), -r["level"]))
        return {"level": best["level"], "path": best["path"], "val_delta1": best["val"].get("delta1"),
                "sparsity": best["sparsity"], "channel_sparsity": best["channel_sparsity"]}

    def stage_branches(self) -> dict:
        from edgeticket.tickets.branches import run_branches
        from edgeticket.tickets.summary import collect_rows

        b = self.cfg.get("branches", {})
        seeds = int(b.get("random_seeds", 0))
        if seeds <= 0:
            return {"skipped": "random_seeds = 0"}
        levels = [r["level"] for r in collect_rows(self.out / "search") if not r["branch"] and r["level"] > 0]
        if b.get("levels", "all") != "all":
            levels = [lv for lv in levels if lv in set(b["levels"])]
        done = []
        for lv in levels:
            done += run_branches(self.out / "search", lv, "random", seeds=seeds, device=self.dev, progress=self.progress)
        return {"branches": [d["path"] for d in done]}

    def stage_ticket(self) -> dict:
        from edgeticket.tickets.mask import Mask, describe_ticket
        from edgeticket.train.finetune import finetune

        m, t = self.cfg["model"], self.cfg.get("ticket", {})
        level = Path(self.state["stages"]["select"]["path"])
        out = self.out / "finetune" / "ticket"
        mask = Mask.load(level)
        res = finetune(self.cache(), m["arch"], out, self._train_cfg(t), pretrained=m.get("pretrained", "none"),
                       mask=mask, extra_meta=describe_ticket(level, mask), device=self.dev, resume=True,
                       progress=self.progress)
        return {"path": str(out), "val": res.val, "test": res.test}

    def stage_export(self) -> dict:
        from edgeticket.export.api import export

        e = self.cfg["export"]
        int8 = bool(e.get("int8", True))
        done = {}
        targets = {"dense": self.out / "finetune" / "dense", "ticket": self.out / "finetune" / "ticket"}
        uns = self.state["stages"].get("search_unstructured", {})
        if uns.get("path") and e.get("unstructured", True):
            from edgeticket.tickets.summary import collect_rows

            rows = [r for r in collect_rows(Path(uns["path"])) if not r["branch"] and r["level"] > 0]
            if rows:
                targets["unstructured"] = Path(max(rows, key=lambda r: r["level"])["path"])
        for name, src in targets.items():
            out = self.out / "export" / name
            if (out / paths.EXPORT_JSON).exists():
                done[name] = str(out)
                continue
            export(src, out, int8=int8 and name != "unstructured", data=self.cache(),
                   calib_images=int(e.get("calib_images", 64)), overwrite=True, progress=self.progress)
            done[name] = str(out)
        return done

    def stage_bench(self) -> dict:
        from edgeticket.bench.api import bench, failed_gates

        b = self.cfg["bench"]
        exp = self.state["stages"]["export"]
        dense = str(Path(exp["dense"]) / paths.ONNX)
        models = [str(Path(exp[k]) / f) for k in ("dense", "ticket", "unstructured") if k in exp
                  for f in (paths.ONNX, paths.ONNX_INT8) if (Path(exp[k]) / f).exists()]
        out = self.out / "bench"
        report = bench(models, dense, self.data_dir(), out, runs=int(b.get("runs", 50)),
                       warmup=int(b.get("warmup", 5)), batch_size=int(b.get("batch_size", 8)),
                       threads=b.get("threads"), gate=b.get("gate") or None, search=self.out / "search",
                       progress=self.progress, command=f"edgeticket pipeline {self.cfg.get('_path', '')}")
        return {"report": str(out / paths.REPORT_MD), "plots": report["plots"], "failed_gates": failed_gates(report)}

    # -- run ----------------------------------------------------------------------------
    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.load_state()
        if "config" not in self.state:
            self.state["config"] = {k: v for k, v in self.cfg.items() if not k.startswith("_")}
            write_json(self.state_path, self.state)
        elif self.state["config"] != {k: v for k, v in self.cfg.items() if not k.startswith("_")}:
            raise UserError(f"{self.state_path}: this run was started with another config; "
                            "use the same config, or --overwrite to start over.")
        for stage in STAGES:
            if self.done(stage):
                self.log(f"[{stage}] done earlier, skipped")
                continue
            self.log(f"[{stage}] ...")
            t0 = time.perf_counter()
            info = getattr(self, f"stage_{stage}")()
            self.mark(stage, info, time.perf_counter() - t0)
            self.log(f"[{stage}] finished in {time.perf_counter() - t0:.1f} s")
        return self.state


def run_pipeline(config: str | Path, out: str | Path | None = None, *, device: str | None = None,
                 overwrite: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    cfg = load_config(config)
    out = Path(out or cfg["run"].get("out", "runs/pipeline"))
    source = cfg["data"].get("source", "synth")
    if source != "synth" and out.resolve() in [Path(source).resolve(), *Path(source).resolve().parents]:
        raise UserError(f"--out {out}: holds the data {source}; choose an --out beside the data, not above it.")
    if overwrite and out.exists():
        import shutil

        shutil.rmtree(out)
    return Pipeline(cfg, out, device, progress, log).run()
