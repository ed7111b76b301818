"""The pipeline's stages, run in order and recorded in ``OUT/pipeline.json``.

Resumable stage by stage: a rerun skips the finished stages, and an interrupted stage
continues (the search and the fine-tunes resume from their own checkpoints). The stages call
the same Python API as the individual commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import read_json, write_json
from edgeticket.pipeline.config import PipelineConfig, load_config, ticket_differences

PRESETS = ("demo", "nyu-fcrn50", "nyu-fastdepth")
STAGES = ("data", "prepare", "dense", "efficient", "search", "search_unstructured", "branches", "select", "ticket",
          "export", "bench")


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise UserError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}.")
    return Path(str(resources.files("edgeticket.presets").joinpath(f"{name}.toml")))


@dataclass
class Pipeline:
    cfg: PipelineConfig
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
    @property
    def dev(self) -> str:
        return self.device or self.cfg.run.device

    def data_dir(self) -> Path:
        src = self.cfg.data.source
        return self.out / paths.PIPE_DATA if src == "synth" else Path(src)

    def cache(self) -> str:
        return self.state["stages"]["prepare"]["cache"]

    def _finetune(self, name: str, train, model=None, **kwargs) -> dict:
        from edgeticket.train.config import FinetuneConfig
        from edgeticket.train.finetune import finetune

        out = self.out / name
        cfg = FinetuneConfig(model=model or self.cfg.model, data=self.cfg.data.prepare, train=train)
        res = finetune(self.cache(), out, cfg, device=self.dev, resume=True, progress=self.progress, **kwargs)
        return {"path": str(out), "val": res.val, "test": res.test}

    def _levels(self, name: str) -> list[dict]:
        from edgeticket.tickets.summary import collect_rows

        return [r for r in collect_rows(self.out / name) if not r["branch"] and r["level"] > 0]

    # -- stages -------------------------------------------------------------------------
    def stage_data(self) -> dict:
        from edgeticket.data.nyu import LABELED_FILE, open_with_split

        d = self.cfg.data
        if d.source != "synth":
            src, split = open_with_split(self.data_dir())
            return {"dataset": str(self.data_dir()), "frames": len(src), "split": split.origin}
        from edgeticket.data.synth import write_synthetic

        target = self.data_dir()
        if (target / LABELED_FILE).exists() and (target / paths.SPLITS_MAT).exists():
            return {"dataset": str(target), "reused": True}
        return write_synthetic(target, d.synth_frames, d.synth_seed, progress=self.progress, views=d.synth_views)

    def stage_prepare(self) -> dict:
        from edgeticket.data.prepare import resolve_data

        return {"cache": str(resolve_data(self.data_dir(), self.cfg.data.prepare, progress=self.progress))}

    def stage_dense(self) -> dict:
        return self._finetune(paths.PIPE_DENSE, self.cfg.dense)

    def stage_efficient(self) -> dict:
        """An efficient model from the start, trained as the dense model was, for the bench's comparison."""
        if self.cfg.efficient is None:
            return {"skipped": "no [efficient] section"}
        return {**self._finetune(paths.PIPE_EFFICIENT, self.cfg.dense, model=self.cfg.efficient),
                "arch": self.cfg.efficient.arch}

    def _search(self, cfg, name: str) -> dict:
        from edgeticket.tickets.imp import search

        summary = search(self.cache(), self.out / name, cfg, device=self.dev, resume=True, progress=self.progress)
        return {"path": str(self.out / name), "levels": len([r for r in summary["rows"] if not r["branch"]])}

    def stage_search(self) -> dict:
        return self._search(self.cfg.search, paths.PIPE_SEARCH)

    def stage_search_unstructured(self) -> dict:
        if self.cfg.search_unstructured is None:
            return {"skipped": "no [search_unstructured] section"}
        return self._search(self.cfg.search_unstructured, paths.PIPE_SEARCH_UNSTRUCTURED)

    def stage_select(self) -> dict:
        """The best ticket by validation δ1 among the pruned levels (never by test)."""
        rows = self._levels(paths.PIPE_SEARCH)
        if not rows:
            raise UserError(f"{self.out / paths.PIPE_SEARCH}: has no pruned level to choose a ticket from; use levels >= 2.")
        best = max(rows, key=lambda r: (r["val"].get("delta1", -1), -r["val"].get("rmse", 1e9), -r["level"]))
        return {"level": best["level"], "path": best["path"], "val_delta1": best["val"].get("delta1"),
                "sparsity": best["sparsity"], "channel_sparsity": best["channel_sparsity"]}

    def stage_branches(self) -> dict:
        from edgeticket.tickets.branches import run_branches
        from edgeticket.tickets.config import BranchConfig

        b = self.cfg.branches
        if b.random_seeds <= 0:
            return {"skipped": "random_seeds = 0"}
        levels = [r["level"] for r in self._levels(paths.PIPE_SEARCH)]
        if b.levels != "all":
            levels = [lv for lv in levels if lv in set(b.levels)]
        done = []
        for lv in levels:
            done += run_branches(self.out / paths.PIPE_SEARCH, "random", BranchConfig(level=lv, seeds=b.random_seeds),
                                 device=self.dev, progress=self.progress)
        return {"branches": [d["path"] for d in done]}

    def stage_ticket(self) -> dict:
        """The chosen ticket, trained from its search's rewind point as the dense model was trained."""
        from edgeticket.tickets.mask import Mask
        from edgeticket.tickets.start import ticket_start

        level = Path(self.state["stages"]["select"]["path"])
        start = ticket_start(self.out / paths.PIPE_SEARCH)
        differs = ticket_differences(self.cfg)
        if differs:
            self.log(f"[ticket] note: the ticket trains unlike the dense model in {', '.join(differs)} ([ticket])")
        train = self.cfg.ticket
        if self.cfg.ticket_distill:  # [ticket] distill = true: the dense model is the teacher
            train = train.replace(distill=str(self.out / paths.PIPE_DENSE))
            differs = [*differs, "distill"]
        info = self._finetune(paths.PIPE_TICKET, train, mask=Mask.load(level), init_from=start.weights,
                              start_step=start)
        step = read_json(Path(info["path"]) / paths.META)["start"]["step"]
        return {**info, "start": {**start.to_json(), "step": step}, "differs_from_dense": differs}

    def stage_export(self) -> dict:
        from edgeticket.export.api import export

        e = self.cfg.export
        done = {}
        targets = {"dense": self.out / paths.PIPE_DENSE, "ticket": self.out / paths.PIPE_TICKET}
        if self.state["stages"].get("efficient", {}).get("path"):
            targets["efficient"] = self.out / paths.PIPE_EFFICIENT
        uns = self.state["stages"].get("search_unstructured", {})
        if uns.get("path"):
            rows = self._levels(paths.PIPE_SEARCH_UNSTRUCTURED)
            if rows:
                targets["unstructured"] = Path(max(rows, key=lambda r: r["level"])["path"])
        for name, src in targets.items():
            out = self.out / paths.PIPE_EXPORT / name
            if not (out / paths.EXPORT_JSON).exists():
                cfg = e.replace(int8=e.int8 and name not in ("unstructured", "efficient"))
                export(src, out, cfg, data=self.cache(), overwrite=True, progress=self.progress)
            done[name] = str(out)
        return done

    def stage_bench(self) -> dict:
        from edgeticket.bench.api import bench, failed_gates

        exp = self.state["stages"]["export"]
        dense = str(Path(exp["dense"]) / paths.ONNX)
        models = [str(Path(exp[k]) / f) for k in ("dense", "ticket", "unstructured", "efficient") if k in exp
                  for f in (paths.ONNX, paths.ONNX_INT8) if (Path(exp[k]) / f).exists()]
        out = self.out / paths.PIPE_BENCH
        report = bench(models, dense, self.data_dir(), out, self.cfg.bench, search=self.out / paths.PIPE_SEARCH,
                       progress=self.progress, command=f"edgeticket pipeline {self.cfg.path}")
        return {"report": str(out / paths.REPORT_MD), "plots": report["plots"], "failed_gates": failed_gates(report)}

    # -- run ----------------------------------------------------------------------------
    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.load_state()
        if "config" not in self.state:
            self.state["config"] = self.cfg.raw
            write_json(self.state_path, self.state)
        elif self.state["config"] != self.cfg.raw:
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
    """Run (or resume) the pipeline of the TOML file ``config``; ``out`` and ``device`` override its [run]."""
    from edgeticket.runs import claimed

    cfg = load_config(config)  # every section and value checked before any stage runs
    out = Path(out or cfg.run.out)
    source = cfg.data.source
    inputs = {"data folder": None if source == "synth" else source, "config": cfg.path}
    # the whole run is one folder of kind pipeline, written by one command at a time; its stages
    # claim their own sub-folders
    with claimed(out, "pipeline", {"config": cfg.raw}, resume=not overwrite, overwrite=overwrite, inputs=inputs,
                 resume_option=None):
        return Pipeline(cfg, out, device, progress, log).run()
