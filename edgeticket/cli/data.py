"""``edgeticket data``: synthetic rooms, the training cache, the NYU download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeticket.cli.common import Overwrite, Quiet, handled, progress_enabled
from edgeticket.cli.options import config_options
from edgeticket.data.config import DataConfig, SynthConfig


@handled
@config_options(synth=SynthConfig)
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write nyu_depth_v2_labeled.mat and splits.mat into.")],
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    *,
    synth: SynthConfig,
):
    """Render procedural indoor rooms in NYU Depth v2's official file layout."""
    from edgeticket.data.synth import write_synthetic

    stats = write_synthetic(out, synth.frames, synth.seed, progress=progress_enabled(quiet), workers=synth.workers,
                            views=synth.views, overwrite=overwrite)
    if stats["reused"]:
        typer.echo(f"{out}: already holds these {stats['n']} frames (same --n, --seed and --views); nothing to do")
        return
    typer.echo(f"wrote {stats['n']} frames of {stats['rooms']} rooms ({stats['n_train']} train / {stats['n_test']} "
               f"test) to {out} in {stats['seconds']:.1f} s ({stats['frames_per_s']:.1f} frames/s)")


@handled
@config_options(data=DataConfig)
def data_prepare(
    src: Annotated[Path, typer.Argument(help="A dataset folder: the official labeled .mat or nyu2 PNGs.")],
    out: Annotated[Path, typer.Option("--out", help="The cache folder to write.")],
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    *,
    data: DataConfig,
):
    """Convert a dataset into a training cache (one HDF5 per split at the input size, full-resolution val/test depth)."""
    from edgeticket import paths
    from edgeticket.data.prepare import prepare
    from edgeticket.fsio import read_json

    root = prepare(src, out, data, progress=progress_enabled(quiet), overwrite=overwrite)
    meta = read_json(root / paths.CACHE_META)
    scenes = f" ({meta['scenes']['val']} of {meta['scenes']['train'] + meta['scenes']['val']} train scenes)" \
        if "scenes" in meta else ""
    typer.echo(f"cache {root}: {meta['counts']} at {'x'.join(map(str, meta['input_size']))}; "
               f"split: {meta['split_origin']}; validation carved by {meta['val_carve']}{scenes}")


@handled
def data_fetch(
    dataset: Annotated[str, typer.Argument(help="nyu: NYU Depth v2 labeled (2.8 GB) and its official split.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to download into (partial downloads resume).")],
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected sha256 of nyu_depth_v2_labeled.mat, if you have one.")] = None,
    url: Annotated[list[str] | None, typer.Option("--url", help="NAME=URL to download NAME from a mirror.")] = None,
    quiet: Quiet = False,
):
    """Download NYU Depth v2 (labeled .mat and splits.mat), resuming and checking them."""
    from edgeticket.data.fetch import fetch_nyu
    from edgeticket.errors import UserError

    if dataset != "nyu":
        raise UserError(f"dataset {dataset!r}: only 'nyu' can be fetched.")
    urls = {}
    for item in url or []:
        if "=" not in item:
            raise UserError(f"--url {item!r}: write NAME=URL, e.g. splits.mat=http://mirror/splits.mat.")
        k, v = item.split("=", 1)
        urls[k] = v
    res = fetch_nyu(out, base_urls=urls or None, sha256=sha256, progress=progress_enabled(quiet))
    for name, r in res.items():
        typer.echo(f"{name}: {r['status']}, {r['bytes']} bytes, sha256 {r['sha256']}")
