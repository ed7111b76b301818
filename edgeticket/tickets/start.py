"""Where a search's tickets start: its rewind point as a weights file and a step.

A fair comparison trains the ticket from the same start as the search that found it (Frankle
& Carbin; open_lth's branches), with the same epochs and schedule as the dense model: the
rewind point's weights (``start.pt`` for ``pretrained``, ``init.pt`` for ``init``,
``level_00/rewind.pt`` for ``epoch:K`` / ``step:K``) and, for a late rewinding point, the step K
those weights were taken at, so that the ticket's training ends at the dense model's total step
count. ``edgeticket.finetune(..., init_from=start.weights, start_step=start.step(spe))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeticket import paths
from edgeticket.errors import UserError
from edgeticket.fsio import read_json
from edgeticket.tickets.rewind import RewindPoint


@dataclass(frozen=True)
class TicketStart:
    """A search's rewind point: the weights levels >= 1 restart from, and where in the schedule."""

    weights: Path
    rewind: RewindPoint

    def step(self, steps_per_epoch: int) -> int:
        """The step of a schedule of ``steps_per_epoch`` steps an epoch at which these weights stand."""
        return self.rewind.step(steps_per_epoch)

    def to_json(self) -> dict:
        return {"weights": str(self.weights), "rewind": str(self.rewind)}


def rewind_file(root: str | Path, rewind: RewindPoint) -> Path:
    """The file a search at ``root`` keeps its rewind point in."""
    root = Path(root)
    if rewind.kind == "pretrained":
        return root / paths.START
    if rewind.kind == "init":
        return root / paths.INIT
    return paths.level_dir(root, 0) / paths.REWIND


def ticket_start(search: str | Path) -> TicketStart:
    """The start of the tickets of the search at ``search`` (its --out folder)."""
    from edgeticket.tickets.config import SearchConfig

    root = Path(search)
    saved = root / paths.SEARCH
    if not saved.is_file():
        raise UserError(f"{root}: no {paths.SEARCH}; pass the --out folder of an `edgeticket search`.")
    rewind = SearchConfig.from_dict(read_json(saved)["config"], where=str(saved)).rewind
    weights = rewind_file(root, rewind)
    if not weights.is_file():
        raise UserError(f"{weights}: the search's {rewind} rewind point is missing; its level 0 has not trained "
                        "far enough, or the file was removed (rerun the search).")
    return TicketStart(weights, rewind)
