"""What a training step will hold in memory, estimated before the first batch is allocated.

A step holds the tensors autograd saves for the backward pass, which grow with the batch, plus
the weights, their gradients and the optimizer's two moments (4x the parameters), plus the
batch itself. The saved tensors are counted on one forward pass of a zero image at batch 1
(``torch.autograd.graph.saved_tensors_hooks``; parameters and buffers are not counted again),
with the BN statistics put back afterwards and no random numbers drawn, so that the estimate
leaves training bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgeticket.errors import UserError

HEADROOM = 1.2  # the backward's own gradients of activations, the allocator's rounding
_SAVED: dict[tuple, int] = {}  # per model shape, input size, device type and autocast


def saved_bytes_per_image(model: nn.Module, input_size: tuple[int, int], device: torch.device,
                          amp_dtype: torch.dtype | None) -> int:
    params = list(model.parameters())
    key = (tuple(p.shape for p in params), tuple(input_size), device.type, amp_dtype)
    if key in _SAVED:
        return _SAVED[key]
    own = {p.data_ptr() for p in params} | {b.data_ptr() for b in model.buffers()}  # not per image
    seen: set[tuple[int, int]] = set()
    total = [0]

    def pack(t: torch.Tensor):
        ident = (t.data_ptr(), t.numel())
        if t.data_ptr() not in own and ident not in seen:
            seen.add(ident)
            total[0] += t.numel() * t.element_size()
        return t  # kept (as autograd keeps it) until the forward's output goes: a freed tensor's address
        # could be reused by the next one, which the (address, size) check would then skip

    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    try:
        model.train()
        x = torch.zeros(1, 3, *input_size, device=device)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(x)
        del out
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        model.train(was_training)
    _SAVED[key] = total[0]
    return total[0]


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where there is no such file."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_bytes()


def check_training_memory(model: nn.Module, input_size: tuple[int, int], batch: int, device: torch.device,
                          amp_dtype: torch.dtype | None) -> dict:
    """The estimate of one training step's peak; refused when the device has less memory free."""
    per = saved_bytes_per_image(model, input_size, device, amp_dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) * 4
    batch_bytes = batch * (per + 4 * 4 * input_size[0] * input_size[1])  # the image and its depth, float32
    total = int((weights + batch_bytes) * HEADROOM)
    free = free_bytes(device)
    if free is not None and total > free:
        raise UserError(f"--batch-size {batch}: a training step at {input_size[0]}x{input_size[1]} would need about "
                        f"{gib(total)} on {device.type} ({gib(per * batch)} of activations, "
                        f"{weights / 2**30:.2f} GiB of weights, gradients and optimizer state) and "
                        f"{gib(free)} is free; pass a smaller --batch-size.")
    return {"saved_per_image": per, "weights": weights, "total": total, "free": free}
