"""Rewinding: the point every IMP level (after level 0) restarts from.

``pretrained`` and ``init`` are the weights before any training (K = 0); ``epoch:K`` and
``step:K`` are level 0's weights after K epochs or steps of training (late rewinding, Frankle
et al. 2020), which level 0 saves as it passes that step. open_lth's ``Step.from_str`` is the
model of the text form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("pretrained", "init", "epoch", "step")


@dataclass(frozen=True)
class RewindPoint:
    kind: str = "pretrained"  # pretrained | init | epoch | step
    k: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"rewind kind {self.kind!r}: choose pretrained, init, epoch:K or step:K")
        if self.kind in ("pretrained", "init") and self.k != 0:
            raise ValueError(f"{self.kind} takes no step count")
        if self.k < 0:
            raise ValueError("K must be >= 0")

    @classmethod
    def parse(cls, text: str | RewindPoint) -> RewindPoint:
        """'pretrained' | 'init' | 'epoch:K' | 'step:K'."""
        if isinstance(text, RewindPoint):
            return text
        m = re.fullmatch(r"(pretrained|init)|(epoch|step):(\d+)", text.strip()) if isinstance(text, str) else None
        if not m:
            raise ValueError("choose pretrained, init, epoch:K or step:K (K a whole number)")
        return cls(m.group(1)) if m.group(1) else cls(m.group(2), int(m.group(3)))

    @property
    def late(self) -> bool:
        """True for epoch:K and step:K: the rewind weights come out of level 0's training."""
        return self.kind in ("epoch", "step")

    def step(self, steps_per_epoch: int) -> int:
        """The global step of the rewind point (0 for pretrained and init)."""
        return self.k * steps_per_epoch if self.kind == "epoch" else self.k if self.kind == "step" else 0

    def to_json(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.kind}:{self.k}" if self.late else self.kind
