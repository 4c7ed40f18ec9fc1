"""Stage `sweep`: FID/KID against the number of sampling steps (DDIM eta 0 and 1, optionally DDPM), as in the DDIM paper's Table 1."""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ddpmlab.reporting import plotting
from ddpmlab.config import _bool, _int, _int_list, get, load_params, validate_T
from ddpmlab.device import FastDenoiser, resolve_device
from ddpmlab.diffusion.sampling import SamplerSpec, sample
from ddpmlab.errors import DataError, ParamError
from ddpmlab.evaluation.fid import InceptionFeatures, fid_from_features, kid_from_features
from ddpmlab.data.images import to_uint8
from ddpmlab.io import write_json
from ddpmlab.training.loop import build_model_from_checkpoint, load_checkpoint


def configs(p: dict) -> list[SamplerSpec]:
    T = validate_T(get(p, "T"))
    steps = _int_list(p, "sweep.steps", lo=1, min_len=1)
    etas = get(p, "sweep.etas")
    if not isinstance(etas, list) or not etas or any(not isinstance(e, (int, float)) or e < 0 for e in etas):
        raise ParamError("sweep.etas", etas, "a non-empty list of numbers >= 0 (DDIM: 0 deterministic, 1 DDPM-like)")
    out = [SamplerSpec("ddim", min(s, T), float(e)) for e in etas for s in sorted(set(steps))]
    if _bool(p, "sweep.ddpm"):
        out.append(SamplerSpec("ddpm", T))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--reference", required=True, type=Path, help="reference features .npz")
    ap.add_argument("--weights", required=True, type=Path, help="converted Inception weights")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        p = load_params(args.params)
        specs = configs(p)
        n = _int(p, "sweep.n_samples", lo=2)
        batch = _int(p, "sample.batch_size", lo=1)
        seed = _int(p, "seed")
        subsets, subset_size = _int(p, "evaluate.kid_subsets", lo=1), _int(p, "evaluate.kid_subset_size", lo=2)
        device = resolve_device(args.device)
        extractor = InceptionFeatures(args.weights, device)
        with np.load(args.reference) as z:
            ref = z["features"]
    except (ParamError, DataError) as e:
        sys.exit(f"sweep: {e}")
    model, sched, ckpt = build_model_from_checkpoint(load_checkpoint(args.model), device)
    model = FastDenoiser(model, device)
    size = ckpt["model_config"]["image_size"]
    rows = []
    for spec in tqdm(specs, desc="sweep", unit="sampler"):
        t0 = time.perf_counter()
        ims = np.concatenate([to_uint8(sample(model, sched, spec, range(i, min(i + batch, n)), seed, (3, size, size), device)[0]) for i in range(0, n, batch)])
        secs = time.perf_counter() - t0
        f = extractor(ims, desc=f"{spec.sampler} {spec.steps}")
        k = min(subset_size, len(f), len(ref))
        kid, kid_std = kid_from_features(f, ref, subsets, k, seed)
        rows.append({"sampler": spec.sampler, "steps": spec.steps if spec.sampler == "ddim" else sched.T, "eta": spec.eta if spec.sampler == "ddim" else 1.0,
                     "fid": fid_from_features(f, ref), "kid": kid, "kid_std": kid_std, "n_generated": len(f), "n_reference": len(ref),
                     "kid_subset_size": k, "seconds": secs})
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "sweep.csv", index=False, float_format="%.6g")

    fig, axes = plotting.plt.subplots(1, 2, figsize=(10, 3.8))
    for (sampler, eta), g in df.groupby(["sampler", "eta"]):
        label = f"DDIM eta={eta:g}" if sampler == "ddim" else "DDPM (all T steps)"
        style = "o-" if sampler == "ddim" else "s"
        axes[0].plot(g["steps"], g["fid"], style, label=label)
        axes[1].errorbar(g["steps"], g["kid"], yerr=g["kid_std"], fmt=style, capsize=3, label=label)
    for ax, name in zip(axes, ("FID", "KID")):
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title(f"{n} samples vs {len(ref)} training images")
    plotting.save(fig, args.out / "sweep.png")
    best = df.loc[df["kid"].idxmin()]
    write_json(args.out / "metrics.json", {"best_kid": best["kid"], "best_kid_sampler": f"{best['sampler']} steps={int(best['steps'])} eta={best['eta']:g}",
                                           "n_generated": n, "configs": len(df)})
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
