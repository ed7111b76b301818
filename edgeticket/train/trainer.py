"""The one training loop: dense fine-tuning, masked fine-tuning and every IMP level.

What it guarantees:
- a mask is applied to the gradients before and to the weights after every optimizer step, so
  masked weights stay exactly zero through momentum and weight decay;
- a checkpoint (``last.pt``) every epoch, written atomically; ``resume=True`` continues from
  it and ends with the same weights as an uninterrupted run with the same seed;
- ``snapshots={K: path}`` saves the weights as they are after K steps (a rewind point), and
  ``start_step=K`` starts at step K with the data order and schedule advanced to it;
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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from edgeticket import faults, paths
from edgeticket.data.augment import AugmentConfig, AugmentParams, augment, sample_params
from edgeticket.data.dataset import PreparedData, SplitTensors
from edgeticket.errors import DivergenceError, Interrupted, UserError
from edgeticket.fsio import (
    append_jsonl,
    load_torch,
    read_json,
    read_jsonl,
    save_torch,
    write_json,
    write_jsonl,
)
from edgeticket.train import distributed as D
from edgeticket.train.checkpoint import cpu_state, load_training_state, training_state
from edgeticket.train.config import TrainConfig
from edgeticket.train.distill import Teacher, check_same_teacher, distill_l1, load_teacher
from edgeticket.train.evaluate import evaluate
from edgeticket.train.losses import get_loss
from edgeticket.train.memory import check_training_memory
from edgeticket.train.optim import batch_plan, lr_factor, make_optimizer, set_base_lr


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
        on_epoch: Callable[[int, dict], None] | None = None,
        net: nn.Module | None = None,
        teacher: Teacher | None = None,
    ):
        """``net`` reuses an already wrapped/compiled ``model`` (the search's levels share one,
        so a new mask never means a new compile). ``teacher`` is ``cfg.distill`` already loaded
        (loaded here when not given); its record goes into meta.json's ``distill``."""
        self.cfg = cfg
        self.out = Path(out)
        self.data = data
        self.meta = meta
        self.device = torch.device(device)
        self.dist = D.current()
        self.progress = progress and self.dist.is_main
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
        if teacher is None and cfg.distill:
            teacher = load_teacher(cfg.distill, cfg.distill_weight, self.mean, self.std)
        self.teacher = teacher.model.to(self.device).eval().requires_grad_(False) if teacher is not None else None
        if self.teacher is not None:
            self.meta = {**meta, "distill": {**teacher.record, "weight": cfg.distill_weight}}
            if self.channels_last:
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, cfg)
        self.batch_size, self.steps_per_epoch = batch_plan(data.count("train"), cfg, self.dist.world)
        # before the first batch: a batch the device cannot hold is one sentence, not an OOM kill
        self.memory = check_training_memory(self.model, tuple(data.input_size), self.batch_size, self.device,
                                            self.amp_dtype)
        self.total_steps = self.steps_per_epoch * cfg.epochs
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

    def _state(self, epoch: int, step_in_epoch: int, global_step: int, best: dict, prev_median: float,
               epoch_losses: torch.Tensor, losses_from: int) -> dict:
        state = training_state(self.model, self.optimizer, self.cfg, self.meta.get("arch"), epoch=epoch,
                               step_in_epoch=step_in_epoch, global_step=global_step, best=best,
                               prev_median=prev_median, epoch_losses=epoch_losses)
        state["losses_from"] = losses_from
        return state

    def _save_last(self, state: dict) -> None:
        if self.dist.is_main:
            save_torch(self.out / paths.LAST, state)

    # -- the loop -------------------------------------------------------------------------
    def fit(self, resume: bool = False, *, snapshots: Mapping[int, Path] | None = None,
            start_step: int = 0) -> TrainResult:
        """Train; ``snapshots`` maps global steps to files for the weights as they are after that
        many steps; ``start_step`` begins at that step of the schedule and data order."""
        cfg = self.cfg
        snapshots = dict(snapshots or {})
        self.out.mkdir(parents=True, exist_ok=True)
        state = load_training_state(self.out / paths.LAST, self.model, self.optimizer, cfg,
                                    self.meta.get("arch")) if resume else None
        if state is not None:
            set_base_lr(self.optimizer, cfg)
            if self.teacher is not None and (self.out / paths.META).exists():
                check_same_teacher(read_json(self.out / paths.META), self.meta["distill"], self.out)
        if self.dist.is_main:
            write_json(self.out / paths.META, {**self.meta, "train": asdict(cfg)})
            if self.mask is not None:
                self.mask.save(self.out / paths.MASK)
        train = self.data.load("train").to(self.device)
        if len(train) == 0:
            raise UserError(f"--data {self.data.root}: the training split is empty; this data has no train frames.")
        bs, spe, total_steps = self.batch_size, self.steps_per_epoch, self.total_steps
        if not 0 <= start_step < total_steps:
            raise ValueError(f"start_step {start_step} is outside the run's {total_steps} steps")
        sampler = DistributedSampler(range(len(train)), num_replicas=self.dist.world, rank=self.dist.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        best = {"rmse": math.inf, "epoch": -1}
        prev_median = math.inf
        if state is not None:
            start_epoch, skip = int(state["epoch"]), int(state["step_in_epoch"])
            global_step, best = int(state["global_step"]), dict(state["best"])
            prev_median, losses0 = float(state["prev_median"]), state["epoch_losses"]
            losses_from = int(state.get("losses_from", 0)) if skip else 0
        else:
            start_epoch, skip = divmod(start_step, spe)
            global_step, losses0, losses_from = start_step, torch.zeros(skip), skip
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
                losses = torch.zeros(spe, device=self.device)
                bad = torch.zeros(spe, dtype=torch.bool, device=self.device)
                if skip:
                    losses[:skip] = losses0[:skip].to(self.device)
                self.net.train()
                t0 = time.perf_counter()
                for step in range(skip, spe):
                    self._snapshot(snapshots, global_step)
                    idx = order[step * bs:(step + 1) * bs]
                    ld = self.train_step(train, idx, sample_params(len(idx), aug_cfg, gen),
                                         lr_factor(global_step, cfg, spe))
                    losses[step] = ld
                    bad[step] = ~torch.isfinite(ld) | (ld > cfg.guard_factor * prev_median)
                    global_step += 1
                    n_seen += len(idx)
                    faults.point("step")
                    last_step = step == spe - 1
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
                                                    losses[: step + 1], losses_from))
                        raise Interrupted(self._stop_message(stop.signum))
                t_train += time.perf_counter() - t0
                D.broadcast_buffers(self.model)
                known = losses[losses_from:]
                prev_median = float(known.median())
                train_loss = float(known.mean())
                skip = losses_from = 0
                val = self._validate()
                improved = val.get("rmse", train_loss) < best["rmse"] or best["epoch"] < 0
                if self.dist.is_main:
                    if improved:
                        save_torch(self.out / paths.MODEL, cpu_state(self.model))
                        best = {"rmse": val.get("rmse", train_loss), "epoch": epoch}
                    dt = max(time.perf_counter() - t0, 1e-9)
                    row = {"epoch": epoch, "train_loss": train_loss, "val": val, "lr": self._encoder_lr(),
                           "seconds": round(dt, 3), "images_per_s": round(spe * bs * self.dist.world / dt, 2)}
                    append_jsonl(self.out / paths.LOG, row)
                    if self.on_epoch:
                        self.on_epoch(epoch, row)
                best = D.broadcast_object(best)
                self._save_last(self._state(epoch + 1, 0, global_step, best, prev_median, torch.zeros(0), 0))
                if D.any_flag(stop.signum is not None, self.device) and epoch + 1 < cfg.epochs:
                    raise Interrupted(self._stop_message(stop.signum))
        self._snapshot(snapshots, global_step)
        return self._finish(best, time.perf_counter() - t_start, n_seen * self.dist.world / max(t_train, 1e-9))

    def train_step(self, train: SplitTensors, idx: torch.Tensor, params: AugmentParams, lr_factor: float) -> torch.Tensor:
        """One optimizer step on the frames ``idx`` of ``train``: augment, forward (autocast),
        loss, backward, masked gradients, step, masked weights. Returns the detached loss; no
        host sync, so a GPU runs ahead."""
        rgb, depth = train.rgb.index_select(0, idx), train.depth.index_select(0, idx)
        x, target = augment(rgb, depth, params, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_factor
        with self._autocast():
            pred = self.net(x)
        loss = self.loss_fn(pred.float(), target)
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                soft = self.teacher(x)
            loss = loss + self.cfg.distill_weight * distill_l1(pred, soft, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._mask_grads()
        self.optimizer.step()
        self.apply_mask()
        return loss.detach()

    def time_steps(self, steps: int, warmup: int = 3, seed: int = 0) -> dict:
        """Throughput of ``train_step`` itself (no validation, no checkpoint): the first
        ``warmup`` steps (compilation included) timed apart, then ``steps`` steps."""
        train = self.data.load("train").to(self.device)
        gen = torch.Generator().manual_seed(seed)
        aug_cfg = AugmentConfig() if self.cfg.augment else _NO_AUG
        order = torch.randint(0, len(train), ((warmup + steps), self.batch_size), generator=gen).to(self.device)
        self.net.train()

        def run(rows) -> float:
            t0 = time.perf_counter()
            for idx in rows:
                loss = self.train_step(train, idx, sample_params(len(idx), aug_cfg, gen), 1.0)
            _sync(self.device)
            if not torch.isfinite(loss):
                raise DivergenceError("time_steps: the loss became NaN/inf")
            return time.perf_counter() - t0

        warm_s = run(order[:warmup]) if warmup else 0.0
        dt = run(order[warmup:]) if steps else 0.0
        return {"batch": self.batch_size, "steps": steps, "warmup_s": warm_s, "step_ms": 1000 * dt / max(steps, 1),
                "images_per_s": steps * self.batch_size * self.dist.world / max(dt, 1e-9)}

    def _snapshot(self, snapshots: dict[int, Path], global_step: int) -> None:
        path = snapshots.get(global_step)
        if path is not None and self.dist.is_main and not Path(path).exists():
            save_torch(path, cpu_state(self.model))

    def _finish(self, best: dict, seconds: float, ips: float) -> TrainResult:
        """Score the best weights on val and test, write metrics.json and final.pt."""
        final = cpu_state(self.model)
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
        """Augmentation draws for (seed, epoch, rank); a run that starts mid-epoch replays the
        ``skip`` batches before it, so it continues with exactly the draws an uninterrupted run makes."""
        gen = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + epoch) * 1_009 + self.dist.rank)
        for _ in range(skip):
            sample_params(bs, aug_cfg, gen)
        return gen

    def _encoder_lr(self) -> float:
        return next((g["lr"] for g in self.optimizer.param_groups if g.get("encoder")), self.optimizer.param_groups[0]["lr"])

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


_NO_AUG = AugmentConfig(scale=(1.0, 1.0), rotate_deg=0.0, jitter=0.0, flip=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
