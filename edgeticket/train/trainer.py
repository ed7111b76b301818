"""The one training loop: dense fine-tuning, masked fine-tuning and every IMP level.

What it guarantees:
- a mask is applied to the gradients before and to the weights after every optimizer step, so
  masked weights stay exactly zero through momentum and weight decay;
- a checkpoint (``last.pt``) every epoch, written atomically; ``resume=True`` continues from
  it and ends with the same weights as an uninterrupted run with the same seed;
- SIGINT/SIGTERM save a checkpoint mid-epoch and stop cleanly (``Interrupted``);
- the divergence guard: a NaN/inf loss, or one 100x above the previous epoch's median, stops
  the run naming the epoch and step. It reads a device flag every ``guard_every`` steps, so
  there is no host sync per step;
- on CUDA: bf16 autocast, channels_last, optional ``torch.compile``; on CPU the same code in fp32;
- under torchrun: DDP, a DistributedSampler, BN buffers from rank 0 at every epoch's end, and
  evaluation on rank 0 over the whole split.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from edgeticket import faults, paths
from edgeticket.data.augment import AugmentConfig, augment, sample_params
from edgeticket.data.dataset import PreparedData
from edgeticket.errors import DivergenceError, Interrupted, UserError
from edgeticket.fsio import (
    append_jsonl,
    load_torch,
    read_jsonl,
    save_torch,
    write_json,
    write_jsonl,
)
from edgeticket.train import distributed as D
from edgeticket.train.evaluate import evaluate
from edgeticket.train.losses import get_loss


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 16
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01  # the encoder's; the decoder's is lr * decoder_lr_mult
    decoder_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | step
    warmup_epochs: float = 1.0
    step_every: int = 0  # step schedule: x0.1 every this many epochs (0: a third of the run)
    loss: str = "berhu"
    augment: bool = True
    seed: int = 0
    eval_batch_size: int = 16
    compile: bool = False
    compile_mode: str = "default"
    amp: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: str = "auto"  # auto (on CUDA) | on | off
    guard_every: int = 50
    guard_factor: float = 100.0

    def check(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--epochs {self.epochs}: give at least 1.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: give at least 1.")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise UserError(f"--lr {self.lr}: the learning rate must be a positive number.")
        if self.optimizer not in ("sgd", "adamw"):
            raise UserError(f"--optimizer {self.optimizer!r}: choose sgd or adamw.")
        if self.schedule not in ("cosine", "step"):
            raise UserError(f"--schedule {self.schedule!r}: choose cosine or step.")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay {self.weight_decay}: must be >= 0.")
        if self.amp not in ("auto", "bf16", "fp32"):
            raise UserError(f"--amp {self.amp!r}: choose auto, bf16 or fp32.")
        get_loss(self.loss)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UserError(f"--device {device!r}: choose cpu or cuda.")
    return torch.device(device)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Encoder at lr, decoder and head at lr x decoder_lr_mult; no weight decay on BN or biases."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("encoder."), p.dim() <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_enc, no_decay), ps in sorted(groups.items()):
        lr = cfg.lr if is_enc else cfg.lr * cfg.decoder_lr_mult
        out.append({"params": ps, "lr": lr, "base_lr": lr, "encoder": is_enc,
                    "weight_decay": 0.0 if no_decay else cfg.weight_decay})
    return out


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_factor(step: int, total: int, warmup: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        every = (cfg.step_every or max(1, math.ceil(cfg.epochs / 3))) * steps_per_epoch
        return 0.1 ** (step // max(1, every))
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks, for as long as training runs."""

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the checkpoint
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


@dataclass
class TrainResult:
    best_epoch: int
    val: dict
    test: dict
    seconds: float
    images_per_s: float


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        data: PreparedData,
        cfg: TrainConfig,
        out: str | Path,
        *,
        meta: dict,
        mask: dict | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
        rewind: tuple[str, int] | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
        net: nn.Module | None = None,
    ):
        """``net`` reuses an already wrapped/compiled ``model`` (the search's levels share one,
        so a new mask never means a new compile)."""
        cfg.check()
        self.cfg = cfg
        self.out = Path(out)
        self.data = data
        self.meta = meta
        self.device = torch.device(device)
        self.dist = D.current()
        self.progress = progress and self.dist.is_main
        self.rewind = rewind
        self.on_epoch = on_epoch
        self.model = model.to(self.device)
        self.mask = mask
        self.loss_fn = get_loss(cfg.loss)
        cuda = self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if (cfg.amp == "bf16" or (cfg.amp == "auto" and cuda)) else None
        self.channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mean = tuple(meta.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(meta.get("std", (0.229, 0.224, 0.225)))
        self.optimizer = make_optimizer(self.model, cfg)
        self._mask_pairs = self._mask_tensors()
        self.net = net if net is not None else self._wrap(self.model)

    # -- set-up ---------------------------------------------------------------------------
    def _mask_tensors(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        if not self.mask:
            return []
        params = dict(self.model.named_parameters())
        return [(params[k], v.to(self.device, params[k].dtype)) for k, v in self.mask.items()]

    def _wrap(self, model: nn.Module) -> nn.Module:
        net = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # BN buffers come from rank 0 once an epoch (broadcast_buffers below), not at every forward.
            no_sync = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                       else {"broadcast_buffers": False})
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids, **no_sync)
        if self.cfg.compile:
            net = torch.compile(net, mode=self.cfg.compile_mode)
        return net

    @torch.no_grad()
    def apply_mask(self) -> None:
        if self._mask_pairs:
            torch._foreach_mul_([p for p, _ in self._mask_pairs], [m for _, m in self._mask_pairs])

    def _mask_grads(self) -> None:
        grads = [p.grad for p, _ in self._mask_pairs if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, [m for p, m in self._mask_pairs if p.grad is not None])

    # -- checkpoints ----------------------------------------------------------------------
    def _state(self, epoch: int, step_in_epoch: int, global_step: int, best: dict, prev_median: float,
               epoch_losses: torch.Tensor) -> dict:
        return {
            "arch": self.meta.get("arch"),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,  # epochs fully done
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "best": best,
            "prev_median": prev_median,
            "epoch_losses": epoch_losses.detach().cpu(),
            "config": asdict(self.cfg),
        }

    def _save_last(self, state: dict) -> None:
        if self.dist.is_main:
            save_torch(self.out / paths.LAST, state)

    def _load_last(self) -> dict | None:
        path = self.out / paths.LAST
        if not path.exists():
            return None
        state = load_torch(path, what="checkpoint")
        if not isinstance(state, dict) or "model" not in state:
            raise UserError(f"{path}: not an edgeticket checkpoint; remove it or choose another --out.")
        if state.get("arch") != self.meta.get("arch"):
            raise UserError(
                f"{path}: the checkpoint is for {state.get('arch')!r}, not {self.meta.get('arch')!r}; "
                "resume with the same --arch or choose another --out."
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"{path}: does not fit this model ({str(e).splitlines()[0]}); choose another --out.") from None
        changed = [k for k, v in asdict(self.cfg).items()
                   if k not in RESUMABLE_CHANGES and k in state.get("config", {}) and state["config"][k] != v]
        if changed:
            raise UserError(f"{path}: this run was started with other settings ({', '.join(changed)}); resume with "
                            "the same options (only --lr may change), or start over with --overwrite.")
        for g in self.optimizer.param_groups:  # a resumed run may lower --lr after divergence
            g["lr"] = g["base_lr"] = self.cfg.lr * (1.0 if g["encoder"] else self.cfg.decoder_lr_mult)
        return state

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._load_last() if resume else None
        if self.dist.is_main:
            write_json(self.out / paths.META, {**self.meta, "train": asdict(cfg)})
            if self.mask is not None:
                save_torch(self.out / paths.MASK, {k: v.clone() for k, v in self.mask.items()})
        train = self.data.load("train").to(self.device)
        if len(train) == 0:
            raise UserError(f"--data {self.data.root}: the training split is empty; this data has no train frames.")
        bs = min(cfg.batch_size, max(1, len(train) // self.dist.world))
        sampler = DistributedSampler(range(len(train)), num_replicas=self.dist.world, rank=self.dist.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        steps_per_epoch = max(1, len(sampler) // bs)
        total_steps = steps_per_epoch * cfg.epochs
        warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps - 1) if cfg.epochs > 1 else 0

        self._check_rewind_point(total_steps)
        start_epoch, skip, global_step = 0, 0, 0
        best = {"rmse": math.inf, "epoch": -1}
        prev_median, losses0 = math.inf, torch.zeros(0)
        if state is not None:
            start_epoch, skip = int(state["epoch"]), int(state["step_in_epoch"])
            global_step, best = int(state["global_step"]), dict(state["best"])
            prev_median, losses0 = float(state["prev_median"]), state["epoch_losses"]
        else:
            self.apply_mask()
        if self.dist.is_main:  # drop log lines of epochs that will run again
            rows = [r for r in read_jsonl(self.out / paths.LOG) if r.get("epoch", 0) < start_epoch]
            write_jsonl(self.out / paths.LOG, rows)

        aug_cfg = AugmentConfig() if cfg.augment else _NO_AUG
        t_train, n_seen = 0.0, 0
        t_start = time.perf_counter()
        with _StopFlag() as stop, self._bar(total_steps) as bar:
            bar_task = bar.add_task("train", total=total_steps, completed=global_step) if bar else None
            for epoch in range(start_epoch, cfg.epochs):
                sampler.set_epoch(epoch)
                order = torch.tensor(list(sampler), dtype=torch.long).to(self.device)  # one copy an epoch
                gen = self._aug_generator(epoch, skip, bs, aug_cfg)
                if skip == 0:
                    self._maybe_save_rewind(epoch=epoch, step=global_step, at_epoch_start=True)
                losses = torch.zeros(steps_per_epoch, device=self.device)
                bad = torch.zeros(steps_per_epoch, dtype=torch.bool, device=self.device)
                if skip:
                    losses[:skip] = losses0[:skip].to(self.device)
                self.net.train()
                t0 = time.perf_counter()
                for step in range(skip, steps_per_epoch):
                    idx = order[step * bs:(step + 1) * bs]
                    rgb, depth = train.rgb.index_select(0, idx), train.depth.index_select(0, idx)
                    params = sample_params(len(idx), aug_cfg, gen)
                    x, target = augment(rgb, depth, params, self.mean, self.std)
                    if self.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    factor = lr_factor(global_step, total_steps, warmup, cfg, steps_per_epoch)
                    for g in self.optimizer.param_groups:
                        g["lr"] = g["base_lr"] * factor
                    with self._autocast():
                        pred = self.net(x)
                    loss = self.loss_fn(pred.float(), target)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self._mask_grads()
                    self.optimizer.step()
                    self.apply_mask()
                    ld = loss.detach()
                    losses[step] = ld
                    bad[step] = ~torch.isfinite(ld) | (ld > cfg.guard_factor * prev_median)
                    global_step += 1
                    n_seen += len(idx)
                    faults.point("step")
                    self._maybe_save_rewind(epoch=epoch, step=global_step)
                    last_step = step == steps_per_epoch - 1
                    stop_now = stop.signum is not None if not self.dist.enabled else (
                        (step + 1) % cfg.guard_every == 0 and D.any_flag(stop.signum is not None, self.device))
                    if (step + 1) % cfg.guard_every == 0 or last_step or stop_now:
                        self._guard(bad[: step + 1], losses, epoch, prev_median)
                        if bar:
                            dt = time.perf_counter() - t0
                            bar.update(bar_task, completed=global_step, description=(
                                f"epoch {epoch + 1}/{cfg.epochs} loss {losses[: step + 1][skip:].mean().item():.4f} "
                                f"{(step + 1 - skip) * bs * self.dist.world / max(dt, 1e-9):.1f} img/s"))
                    if stop_now and not last_step:
                        self._save_last(self._state(epoch, step + 1, global_step, best, prev_median,
                                                    losses[: step + 1]))
                        raise Interrupted(self._stop_message(stop.signum))
                t_train += time.perf_counter() - t0
                skip = 0
                D.broadcast_buffers(self.model)
                prev_median = float(losses.median())
                train_loss = float(losses.mean())
                val = self._validate()
                improved = val.get("rmse", train_loss) < best["rmse"] or best["epoch"] < 0
                if self.dist.is_main:
                    if improved:
                        save_torch(self.out / paths.MODEL, _cpu_state(self.model))
                        best = {"rmse": val.get("rmse", train_loss), "epoch": epoch}
                    row = {"epoch": epoch, "train_loss": train_loss, "val": val, "lr": self._encoder_lr(),
                           "seconds": round(time.perf_counter() - t0, 3),
                           "images_per_s": round(steps_per_epoch * bs * self.dist.world / max(time.perf_counter() - t0, 1e-9), 2)}
                    append_jsonl(self.out / paths.LOG, row)
                    if self.on_epoch:
                        self.on_epoch(epoch, row)
                best = D.broadcast_object(best)
                self._save_last(self._state(epoch + 1, 0, global_step, best, prev_median, torch.zeros(0)))
                if D.any_flag(stop.signum is not None, self.device) and epoch + 1 < cfg.epochs:
                    raise Interrupted(self._stop_message(stop.signum))
        return self._finish(best, time.perf_counter() - t_start, n_seen * self.dist.world / max(t_train, 1e-9))

    def _finish(self, best: dict, seconds: float, ips: float) -> TrainResult:
        """Score the best weights on val and test, write metrics.json and final.pt."""
        final = _cpu_state(self.model)
        if self.dist.is_main:
            save_torch(self.out / paths.FINAL, final)
            self.model.load_state_dict(load_torch(self.out / paths.MODEL, what="checkpoint"))
            val = self._evaluate("val")
            test = self._evaluate("test")
            write_json(self.out / paths.METRICS, {"val": val, "test": test, "best_epoch": best["epoch"]})
            self.model.load_state_dict(final)
        else:
            val, test = {}, {}
        D.barrier()
        return TrainResult(best["epoch"], val, test, seconds, ips)

    def _validate(self) -> dict:
        return self._evaluate("val") if self.dist.is_main else {}

    def _evaluate(self, split: str) -> dict:
        if self.data.count(split) == 0:
            return {}
        return evaluate(self.model, self.data, split, self.device, self.cfg.eval_batch_size, self.mean, self.std,
                        channels_last=self.channels_last)

    def _guard(self, bad: torch.Tensor, losses: torch.Tensor, epoch: int, prev_median: float) -> None:
        local = bool(bad.any())
        if not D.any_flag(local, self.device):  # every rank stops together, or none does
            return
        if not local:
            raise DivergenceError(
                f"training diverged on another rank in epoch {epoch + 1}; the last good checkpoint "
                f"{self.out / paths.LAST} is kept; lower --lr (now {self.cfg.lr:g}) and rerun with --resume.")
        step = int(bad.nonzero()[0, 0])
        value = float(losses[step])
        why = "became NaN/inf" if not math.isfinite(value) else (
            f"reached {value:.4g}, over {self.cfg.guard_factor:g}x the previous epoch's median {prev_median:.4g}")
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step + 1}: the loss {why}; "
            f"the last good checkpoint {self.out / paths.LAST} is kept; lower --lr (now {self.cfg.lr:g}) and rerun with --resume."
        )

    def _aug_generator(self, epoch: int, skip: int, bs: int, aug_cfg: AugmentConfig) -> torch.Generator:
        """Augmentation draws for (seed, epoch, rank); a mid-epoch resume replays the ``skip``
        batches already done, so it continues with exactly the draws an uninterrupted run makes."""
        gen = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + epoch) * 1_009 + self.dist.rank)
        for _ in range(skip):
            sample_params(bs, aug_cfg, gen)
        return gen

    def _encoder_lr(self) -> float:
        return next((g["lr"] for g in self.optimizer.param_groups if g.get("encoder")), self.optimizer.param_groups[0]["lr"])

    def _check_rewind_point(self, total_steps: int) -> None:
        if not self.rewind:
            return
        kind, k = self.rewind
        if (kind == "epoch" and k >= self.cfg.epochs) or (kind == "step" and k > total_steps):
            raise UserError(f"--rewind {kind}:{k}: level 0 trains {self.cfg.epochs} epochs ({total_steps} steps); "
                            "choose a rewind point inside that.")

    def _maybe_save_rewind(self, epoch: int, step: int, at_epoch_start: bool = False) -> None:
        if not self.rewind or not self.dist.is_main:
            return
        kind, k = self.rewind
        hit = (kind == "epoch" and at_epoch_start and epoch == k) or (kind == "step" and not at_epoch_start and step == k)
        if kind == "step" and k == 0 and at_epoch_start and step == 0:
            hit = True
        path = self.out / paths.REWIND
        if hit and not path.exists():
            save_torch(path, _cpu_state(self.model))

    def _stop_message(self, signum: int | None) -> str:
        name = signal.Signals(signum).name if signum else "a signal"
        return (f"stopped by {name}; the checkpoint {self.out / paths.LAST} is saved; "
                "run the same command with --resume to continue.")

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _bar(self, total: int):
        if not self.progress:
            return contextlib.nullcontext(None)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=True)


# What may differ between a run and its resume: the learning rate (lowered after divergence)
# and settings that change speed or bookkeeping, never the batches or the schedule.
RESUMABLE_CHANGES = {"lr", "eval_batch_size", "compile", "compile_mode", "guard_every", "guard_factor"}

_NO_AUG = AugmentConfig(scale=(1.0, 1.0), rotate_deg=0.0, jitter=0.0, flip=False)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

