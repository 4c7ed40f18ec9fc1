"""Stage `memorization`: nearest training image of every sample (pixels, with flips; Inception cosine) against the validation baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddpmlab.core.memorization import Memorization, analyse
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.data.splits import load_features, load_images, load_split
from ddpmlab.pipeline.io import save_image, write_json
from ddpmlab.pipeline.schema import load_params


def figures(samples, train, details, m: Memorization, out_dir, n_pairs: int = 8) -> None:
    from ddpmlab.core.images import grid
    from ddpmlab.pipeline import figures as plotting

    plt = plotting.plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.linspace(0, max(details["s_pix"].max(), details["v_pix"].max()) * 1.05, 30)
    axes[0].hist(details["v_pix"], bins=bins, density=True, alpha=0.5, label="validation -> train")
    axes[0].hist(details["s_pix"], bins=bins, density=True, alpha=0.5, label="sample -> train")
    axes[0].axvline(m.pixel_threshold, color="k", ls=":", label="near-copy threshold")
    axes[0].set_xlabel("nearest-neighbour RMS pixel distance")
    axes[0].legend(fontsize=8)
    cb = np.linspace(min(details["s_cos"].min(), details["v_cos"].min()) - 0.01, 1, 30)
    axes[1].hist(details["v_cos"], bins=cb, density=True, alpha=0.5, label="validation -> train")
    axes[1].hist(details["s_cos"], bins=cb, density=True, alpha=0.5, label="sample -> train")
    axes[1].axvline(m.cosine_threshold, color="k", ls=":", label="near-copy threshold")
    axes[1].set_xlabel("nearest-neighbour Inception cosine similarity")
    axes[1].legend(fontsize=8)
    plotting.save(fig, out_dir / "nn_distances.png")

    order = np.argsort(details["s_pix"])[:n_pairs]
    bank = np.concatenate([train, train[:, :, ::-1]])
    pairs = np.stack([np.stack([samples[i], bank[details["s_idx"][i]]]) for i in order])  # [n, 2, H, W, 3]
    scale = max(1, 64 // samples.shape[1])
    # top row: the samples closest to a training image; bottom row: that training image (maybe mirrored)
    save_image(grid(pairs.transpose(1, 0, 2, 3, 4).reshape(-1, *samples.shape[1:]), ncol=len(order), scale=scale), out_dir / "closest_pairs.png")


@command("memorization")
def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("--samples", required=True, type=Path, help="samples.npz")
    ap.add_argument("--sample-features", required=True, type=Path)
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--train-features", required=True, type=Path)
    ap.add_argument("--val-features", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    args = ap.parse_args(argv)
    mp = load_params(args.params).memorization
    ratio, cos = mp.pixel_ratio, mp.cosine_threshold
    samples, train, val = load_images(args.samples), load_split(args.train), load_split(args.val)
    fs, ft, fv = load_features(args.sample_features), load_features(args.train_features), load_features(args.val_features)
    m, details = analyse(samples, train, val, fs, ft, fv, ratio, cos)
    args.out.mkdir(parents=True, exist_ok=True)
    figures(samples, train, details, m, args.out)
    write_json(args.out / "metrics.json", m.metrics())
    print("memorization:", m.reading())


if __name__ == "__main__":
    main()
