"""What the channel criterion's effective-budget solve costs on FCRN-ResNet50 (issue 20, part A).

Builds fcrn_resnet50 (random init, no download), its channel groups, and prunes two levels with
``prune_channels`` at effective densities 0.8 and 0.64 (round_to 8), printing the seconds per
level and the effective sparsity reached against the target, beside the mask's own sparsity.

    PYTHONPATH=. python benchmarks/channel_solve.py
"""

import time

import torch

from edgeticket.models import build_model
from edgeticket.tickets.criteria import common as C
from edgeticket.tickets.criteria.channel import prune_channels
from edgeticket.tickets.groups import channel_groups, prunable_groups
from edgeticket.tickets.mask import Mask
from edgeticket.tickets.sparsity import effective_sparsity


def main() -> None:
    torch.manual_seed(0)
    m = build_model("fcrn_resnet50")
    names = C.prunable_names(m)
    t = time.perf_counter()
    groups = prunable_groups(channel_groups(m), set(names))
    print("groups_s", round(time.perf_counter() - t, 2))
    mask = C.with_bn_entries(Mask.ones(m, names), groups)
    w = dict(m.named_parameters())
    for k in (1, 2):
        t = time.perf_counter()
        mask = prune_channels(w, mask, groups, 0.8 ** k, 8).mask
        dt = time.perf_counter() - t
        print(k, "solve_s", round(dt, 2), "effective", round(effective_sparsity(mask, groups=groups), 4),
              "target", round(1 - 0.8 ** k, 4), "mask", round(mask.sparsity(), 4))


if __name__ == "__main__":
    main()
