"""What every level and branch of one search shares: settings, data, scope, groups, the
criterion, the one training model, and the weights levels start from."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgeticket import paths
from edgeticket.data.dataset import PreparedData
from edgeticket.errors import UserError
from edgeticket.fsio import load_torch, read_json, save_torch
from edgeticket.models.registry import build_model
from edgeticket.tickets.config import SearchConfig
from edgeticket.tickets.criteria import PruneContext, get_criterion
from edgeticket.tickets.criteria.common import prunable_names
from edgeticket.tickets.groups import ChannelGroup, build_graph, channel_groups, prunable_groups
from edgeticket.tickets.mask import Mask
from edgeticket.train import distributed as D
from edgeticket.train.run import resolve_device, run_meta


class SearchContext:
    def __init__(self, root: Path, cfg: SearchConfig, data: PreparedData, device: torch.device, progress: bool,
                 teacher=None):
        self.root, self.cfg, self.data, self.device, self.progress = root, cfg, data, device, progress
        self.criterion = get_criterion(cfg.criterion)
        probe = build_model(cfg.model.arch)
        self.scope = prunable_names(probe, cfg.scope, cfg.include_conv1)
        self._groups: list[ChannelGroup] | None = None
        self.probe = probe
        self._model: nn.Module | None = None  # one training model for every level and branch
        self.net: nn.Module | None = None  # ... and its compiled wrapper, made once
        self.budget = None  # a tickets.budget.LatencyBudget for a latency-budgeted channel search
        self._teacher = teacher

    @property
    def teacher(self):
        """``cfg.train.distill`` loaded once for every level and branch (None without one)."""
        if self._teacher is None and self.cfg.train.distill:
            from edgeticket.train.distill import teacher_for

            self._teacher = teacher_for(self.cfg.train, self.cfg.model.arch)
        return self._teacher

    def training_model(self, weights: dict[str, torch.Tensor]) -> nn.Module:
        """The search's one training model, loaded in place with ``weights``."""
        if self._model is None:
            self._model = build_model(self.cfg.model.arch)
        self._model.load_state_dict(weights)
        return self._model

    @property
    def groups(self) -> list[ChannelGroup]:
        """Prunable dependency groups (built once, on the CPU)."""
        if self._groups is None:
            self._groups = prunable_groups(channel_groups(self.probe, build_graph(self.probe)), set(self.scope))
        return self._groups

    @property
    def channel(self) -> bool:
        return self.criterion.structured

    @property
    def ticket_groups(self) -> list[ChannelGroup] | None:
        """The groups a channel ticket's controls work per; None for unstructured tickets."""
        return self.groups if self.channel else None

    def prune_context(self) -> PruneContext:
        return PruneContext(groups=self.groups if self.channel else [], round_to=self.cfg.round_to)

    def initial_mask(self) -> Mask:
        return self.criterion.initial_mask(Mask.ones(self.probe, self.scope), self.prune_context())

    # -- the weights levels start from ---------------------------------------------------
    def start_weights(self) -> dict[str, torch.Tensor]:
        """Level 0's starting weights, saved once so every rerun starts identically."""
        path = self.root / paths.START
        if D.current().is_main and not path.exists():
            torch.manual_seed(self.cfg.train.seed)
            model = build_model(self.cfg.model.arch, weights_backbone=self.cfg.model.pretrained, progress=self.progress)
            save_torch(path, model.state_dict())
        D.barrier()
        return load_torch(path, what="weights")

    def init_weights(self) -> dict[str, torch.Tensor]:
        """One seeded random initialisation (the same tensors as start.pt under --pretrained none)."""
        path = self.root / paths.INIT
        if D.current().is_main and not path.exists():
            torch.manual_seed(self.cfg.train.seed)
            save_torch(path, build_model(self.cfg.model.arch).state_dict())
        D.barrier()
        return load_torch(path, what="weights")

    def level0_weights(self) -> dict[str, torch.Tensor]:
        # The original LTH (--rewind init): every level, level 0 included, starts from one init.
        return self.init_weights() if self.cfg.rewind.kind == "init" else self.start_weights()

    def rewind_weights(self) -> dict[str, torch.Tensor]:
        """The weights levels >= 1 (and the branches) restart from."""
        kind = self.cfg.rewind.kind
        if kind == "pretrained":
            return self.start_weights()
        if kind == "init":
            return self.init_weights()
        path = paths.level_dir(self.root, 0) / paths.REWIND
        if not path.exists():
            raise UserError(f"{path}: level 0 did not save its {self.cfg.rewind} rewind point; rerun the search from scratch.")
        return load_torch(path, what="weights")

    def meta(self, **extra) -> dict:
        return run_meta(self.cfg.model.arch, self.data, pretrained=self.cfg.model.pretrained, task="search",
                        search=str(self.root), **extra)


def open_search(root: str | Path, device: str | None = "auto", progress: bool = True) -> SearchContext:
    """The context of a finished (or running) search, from its search.json."""
    root = Path(root)
    saved = root / paths.SEARCH
    if not saved.exists():
        raise UserError(f"{root}: no {paths.SEARCH}; pass the --out folder of an `edgeticket search`.")
    info = read_json(saved)
    cfg = SearchConfig.from_dict(info["config"], where=str(saved))
    cache = Path(info.get("cache", ""))
    if not (cache / paths.CACHE_META).exists():
        raise UserError(f"{saved}: its data cache {cache} is gone; rerun the search's data preparation.")
    return SearchContext(root, cfg, PreparedData(cache), resolve_device(device), progress)
