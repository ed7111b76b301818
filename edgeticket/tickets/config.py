"""How to search for tickets, and how to branch baselines off a level."""

from __future__ import annotations

from dataclasses import dataclass

from edgeticket.data.config import DataConfig
from edgeticket.hparams import FieldError, Hparams, hfield
from edgeticket.models.config import ModelConfig
from edgeticket.tickets.rewind import RewindPoint
from edgeticket.train.config import TrainConfig

_PANEL = "Search"
SCOPES = ("encoder", "decoder", "all")


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
    model: ModelConfig = hfield(default_factory=ModelConfig, help="The model.", nested=True)
    data: DataConfig = hfield(default_factory=DataConfig, help="The data.", nested=True)
    train: TrainConfig = hfield(default_factory=TrainConfig, help="How every level trains.", nested=True)

    def check_fields(self) -> None:
        if self.rewind.kind == "epoch" and self.rewind.k >= self.train.epochs:
            raise FieldError("rewind", self.rewind, f"level 0 trains {self.train.epochs} epochs; choose a rewind "
                             "point inside that (or raise --epochs)")

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
