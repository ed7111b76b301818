"""How to search for tickets, and how to branch baselines off a level."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.data.config import DataConfig
from edgeticket.hparams import FieldError, Hparams, hfield
from edgeticket.models.config import ModelConfig
from edgeticket.tickets.rewind import RewindPoint
from edgeticket.train.config import TrainConfig

_PANEL = "Search"
_BUDGET = "Latency budget"
SCOPES = ("encoder", "decoder", "all")
ALLOCATIONS = ("latency", "macs", "uniform")  # tickets.budget: prune_to_latency (twice), prune_uniform_to_latency


def _criteria() -> tuple[str, ...]:
    from edgeticket.tickets.criteria import criterion_names

    return criterion_names()


@dataclass
class SearchConfig(Hparams):
    """An IMP search: the schedule of levels, the criterion, the rewind point, and the model,
    data and training every level shares."""

    section = "search"

    levels: int = hfield(5, help="Number of levels; level 0 is the dense model.", high=1000, panel=_PANEL,
                         check=lambda v: "give at least 1 (level 0 is the dense model)" if v < 1 else None)
    rate: float = hfield(0.2, help="Fraction of what is still alive pruned per level.", low=0, high=1,
                         low_open=True, high_open=True, panel=_PANEL)
    criterion: str = hfield("magnitude-global", help="The pruning criterion: magnitude-global, magnitude-layerwise "
                            "(unstructured), channel (whole channels by L1, which compaction removes) or refill "
                            "(IMP-Refill: global magnitude, then whole channels by surviving count).", choices=_criteria,
                            panel=_PANEL)
    scope: str = hfield("all", help="encoder, decoder or all (the decoder holds most of FCRN's MACs).",
                        choices=SCOPES, panel=_PANEL)
    include_conv1: bool = hfield(False, help="Also prune the encoder's first conv.", panel=_PANEL)
    round_to: int = hfield(8, help="Channel tickets keep widths that are multiples of this.", low=1, high=4096,
                           panel=_PANEL)
    rewind: RewindPoint = hfield(RewindPoint(), help="Where levels >= 1 restart: pretrained, init, epoch:K or step:K "
                                 "(level 0's weights after K epochs or steps).", parse=RewindPoint.parse, panel=_PANEL)
    target_sparsity: float | None = hfield(None, help="Stop once a level reaches this sparsity.", low=0, high=1,
                                           low_open=True, high_open=True, panel=_PANEL)
    target_speedup: float | None = hfield(None, help="Channel searches: prune to a predicted speed-up over the dense "
                                          "model; each level then removes --rate of the latency, and the search stops "
                                          "at the first level that meets it (--levels is a maximum).", low=1,
                                          low_open=True, high=1e6, panel=_BUDGET)
    target_latency: float | None = hfield(None, help="Channel searches: prune to a predicted latency in milliseconds "
                                          "(as --target-speedup).", low=0, low_open=True, high=1e7, panel=_BUDGET)
    allocation: str = hfield("latency", help="How a budgeted level removes channels: latency (importance per "
                             "predicted millisecond saved, HALP-style), macs (importance times the MACs removed, per "
                             "millisecond: keeps the most compute a budget allows) or uniform (one fraction of every "
                             "group, the largest that meets the level's predicted latency: the control).",
                             choices=ALLOCATIONS, panel=_BUDGET)
    latency_provider: str = hfield("cpu", help="ONNX Runtime provider the latency table is measured with.",
                                   choices=("cpu", "cuda"), panel=_BUDGET)
    threads: int | None = hfield(None, help="Intra-op threads of the latency table (default: physical cores, as "
                                 "the bench).", low=1, high=1024, panel=_BUDGET)
    remeasure: bool = hfield(False, help="Measure the latency table again instead of reading the cache.",
                             panel=_BUDGET)
    check_latency: bool = hfield(True, help="Budgeted searches: time the level predicted to meet the target beside "
                                 "the dense model, as the bench does, and while it measures short of the target, "
                                 "prune it again to a prediction corrected by the measurement (at most "
                                 "3 times).", panel=_BUDGET)
    model: ModelConfig = hfield(default_factory=ModelConfig, help="The model.", nested=True)
    data: DataConfig = hfield(default_factory=DataConfig, help="The data.", nested=True)
    train: TrainConfig = hfield(default_factory=TrainConfig, help="How every level trains.", nested=True)

    def check_fields(self) -> None:
        if self.target_speedup is not None and self.target_latency is not None:
            raise FieldError("target_latency", self.target_latency, "give --target-speedup or --target-latency, "
                             "not both")
        if self.budgeted and not self.structured:
            from edgeticket.tickets.criteria import criterion_names

            name = "target_speedup" if self.target_speedup is not None else "target_latency"
            raise FieldError(name, getattr(self, name), f"a latency target takes a channel criterion "
                             f"(--criterion {' or '.join(criterion_names(structured=True))}), not {self.criterion}")
        if self.allocation != "latency" and not self.budgeted:
            raise FieldError("allocation", self.allocation, "an allocation takes a latency target (--target-speedup "
                             "or --target-latency); without one a channel search is uniform by density")
        if self.rewind.kind == "epoch" and self.rewind.k >= self.train.epochs:
            raise FieldError("rewind", self.rewind, f"level 0 trains {self.train.epochs} epochs; choose a rewind "
                             "point inside that (or raise --epochs)")

    @property
    def budgeted(self) -> bool:
        return self.target_speedup is not None or self.target_latency is not None

    @property
    def structured(self) -> bool:
        from edgeticket.tickets.criteria import get_criterion

        return get_criterion(self.criterion).structured


@dataclass
class BranchConfig(Hparams):
    """A baseline trained beside a finished level (see ``edgeticket.tickets.branches``)."""

    section = "branches"

    level: int = hfield(help="The level to branch from.", low=0)
    seeds: int = hfield(3, help="random: one branch per seed.", low=1, high=1000)
    global_draw: bool = hfield(False, help="random: one global draw instead of per layer.", flag="global")
    sparsity: float | None = hfield(None, help="oneshot: the target sparsity.", low=0, high=1, low_open=True,
                                    high_open=True)
