"""Depth metrics: one implementation, shared by fine-tuning and the ONNX Runtime bench.

Predictions are upsampled bilinearly to the ground truth's resolution (480x640), clipped to
[1e-3, 10] m and scored on the Eigen crop (rows 45:471, cols 41:601, 0-based, end exclusive)
over pixels with 1e-3 < gt < 10 (strict at both ends, as BTS and AdaBins: a nyu2 PNG's
10000 mm, exactly 10.0 m, is not scored). Each metric is computed per image and then averaged
over the images, as BTS and AdaBins evaluate. δk counts max(pred/gt, gt/pred) < 1.25^k (strict).

Non-finite predictions are mapped before anything else, at the prediction's own resolution, by
BTS's rule: NaN -> 1e-3, +inf -> 10, -inf -> 1e-3 (BTS clips first, so -inf meets the lower
bound). Their count over the split is ``nonfinite`` in the metrics dict, so the metrics of a
diverged model stay finite and still say that it diverged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")
HIGHER_IS_BETTER = {"delta1", "delta2", "delta3"}
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0
EIGEN_CROP = (45, 471, 41, 601)  # at 480x640
GT_SIZE = (480, 640)


def eigen_mask(h: int, w: int, device=None) -> torch.Tensor:
    """The Eigen crop as a bool mask; for sizes other than 480x640 it scales proportionally."""
    t, b, left, r = EIGEN_CROP
    if (h, w) != GT_SIZE:
        t, b = round(t * h / 480), round(b * h / 480)
        left, r = round(left * w / 640), round(r * w / 640)
    m = torch.zeros(h, w, dtype=torch.bool, device=device)
    m[t:b, left:r] = True
    return m


def upsample_to(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,1,h,w) -> (B,1,H,W), bilinear, align_corners=False."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred.float(), size=size, mode="bilinear", align_corners=False)


def finite_prediction(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BTS's rule for non-finite depth: NaN -> MIN_DEPTH, +inf -> MAX_DEPTH, -inf -> MIN_DEPTH;
    and the (B,) count of non-finite pixels per image."""
    nonfinite = (~torch.isfinite(pred)).flatten(1).sum(dim=1)
    return torch.nan_to_num(pred, nan=MIN_DEPTH, posinf=MAX_DEPTH, neginf=MIN_DEPTH), nonfinite


def per_image(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image metrics (B, 8) in METRIC_KEYS order, (B,) whether the image had valid pixels,
    and (B,) its count of non-finite predicted pixels.

    ``pred`` (B,1,h,w) at any resolution; ``gt`` (B,1,H,W) or (B,H,W) metres at full resolution.
    """
    if gt.dim() == 3:
        gt = gt[:, None]
    pred, nonfinite = finite_prediction(pred)
    # |depth| > 1e30 could overflow to inf in the float32 upsampling; every such pixel clips to a bound anyway
    pred = upsample_to(pred.clamp(-1e30, 1e30), tuple(gt.shape[-2:])).double().clamp(MIN_DEPTH, MAX_DEPTH)
    gt = gt.double()
    valid = (gt > MIN_DEPTH) & (gt < MAX_DEPTH) & eigen_mask(*gt.shape[-2:], device=gt.device)
    vf = valid.double()
    n = vf.sum(dim=(1, 2, 3))
    safe_gt = torch.where(valid, gt, torch.ones_like(gt))
    safe_pred = torch.where(valid, pred, torch.ones_like(pred))
    diff = safe_pred - safe_gt
    log_diff = torch.log(safe_pred) - torch.log(safe_gt)
    ratio = torch.maximum(safe_pred / safe_gt, safe_gt / safe_pred)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return (x * vf).sum(dim=(1, 2, 3)) / n.clamp_min(1)

    out = torch.stack(
        [
            mean(diff.abs() / safe_gt),
            mean(diff.square() / safe_gt),
            mean(diff.square()).sqrt(),
            mean(log_diff.square()).sqrt(),
            mean((torch.log10(safe_pred) - torch.log10(safe_gt)).abs()),
            mean((ratio < 1.25).double()),
            mean((ratio < 1.25**2).double()),
            mean((ratio < 1.25**3).double()),
        ],
        dim=1,
    )
    return out, n > 0, nonfinite


class MetricAccumulator:
    """Sums per-image metrics on the device; ``compute()`` is the only host sync.

    ``compute()`` gives the METRIC_KEYS averaged over the images with valid pixels, ``n_images``
    (those images) and ``nonfinite`` (non-finite predicted pixels over every image seen).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.sum = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        m, ok, nonfinite = per_image(pred, gt.to(pred.device))
        self.sum += (m * ok[:, None].double()).sum(dim=0)
        self.count += ok.double().sum()
        self.nonfinite += nonfinite.sum()

    def compute(self) -> dict[str, float]:
        n = float(self.count.item())
        vals = (self.sum / max(n, 1.0)).tolist()
        out = {k: float(v) for k, v in zip(METRIC_KEYS, vals, strict=True)}
        out["n_images"] = int(n)
        out["nonfinite"] = int(self.nonfinite.item())
        return out


def compute_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    acc = MetricAccumulator(pred.device)
    acc.update(pred, gt)
    return acc.compute()
