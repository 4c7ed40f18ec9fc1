"""Stage `report`: assemble the run's figures and metrics into one markdown file.

Its inputs are the outputs of the other stages, found in dvc.yaml (the report stage's deps): no path
is written both here and there."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ddpmlab.core.errors import DataError
from ddpmlab.core.files import write_text
from ddpmlab.core.memorization import Memorization
from ddpmlab.core.residuals import check as R
from ddpmlab.pipeline import dvcyaml
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.io import fmt, read_json, write_json
from ddpmlab.pipeline.schema import load_params

# What the report reads: key -> (the stage that writes it, its file name). The folders are dvc.yaml's
# (the report stage's deps); `inputs` resolves them there, so no path is written twice.
INPUTS = {
    "prepare_stats": ("prepare", "stats.json"), "contact_sheet": ("prepare", "contact_sheet.png"), "raw_sizes": ("prepare", "raw_sizes.png"),
    "schedule_metrics": ("schedule", "metrics.json"), "schedule_table": ("schedule", "terminal.csv"),
    "schedule_plot": ("schedule", "sqrt_alpha_bar.png"), "forward": ("schedule", "forward_process.png"),
    "train_metrics": ("train", "metrics.json"), "train_speed": ("train", "speed.json"), "loss_plot": ("residuals", "loss.png"),
    "residual_metrics": ("residuals", "metrics.json"), "loss_by_t": ("residuals", "loss_by_t.csv"),
    "loss_by_t_plot": ("residuals", "loss_by_t.png"), "qq": ("residuals", "qq.png"), "autocorr": ("residuals", "autocorr.png"),
    "spikes": ("residuals", "spikes.png"), "over_training": ("residuals", "over_training.png"),
    "sampling": ("sample", "sampling.json"), "grid": ("sample", "grid.png"), "trajectory": ("sample", "trajectory.png"),
    "trajectory_gif": ("sample", "trajectory.gif"),
    "evaluate_metrics": ("evaluate", "metrics.json"), "sweep_table": ("sweep", "sweep.csv"), "sweep_plot": ("sweep", "sweep.png"),
    "memorization_metrics": ("memorization", "metrics.json"), "nn_distances": ("memorization", "nn_distances.png"),
    "closest_pairs": ("memorization", "closest_pairs.png"),
}


def inputs(dvc_yaml: str | Path = "dvc.yaml", stage: str = "report") -> dict[str, Path]:
    """INPUTS resolved against dvc.yaml: key -> path (a DvcYamlError line if dvc.yaml and INPUTS disagree)."""
    found = dvcyaml.stage_inputs(dvcyaml.load(dvc_yaml), stage, INPUTS)
    return {k: Path(dvc_yaml).parent / p for k, p in found.items()}  # dvc.yaml's paths are relative to its folder


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _table(rows: list[tuple]) -> str:
    out = ["| quantity | value |", "|---|---|"]
    out += [f"| {k} | {fmt(v)} |" for k, v in rows]
    return "\n".join(out)


# The headline's names, in the order `dvc exp show` lists them: short enough that a two-run comparison fits 120 columns.
HEADLINE = {
    "fid": "FID against the training split (biased upward at small N: compare at equal N)",
    "kid": "KID (unbiased), mean over subsets", "kid_std": "KID's standard deviation over subsets",
    "precision": "precision (samples on the data manifold, k-NN)", "recall": "recall (coverage of the training images, k-NN)",
    "val_loss": "validation loss of the EMA network",
    "resid_ok": "the chi-squared residual check's verdict: true = consistent",
    "resid_kurt": "its marginal effect: excess kurtosis of the standardised residuals (0 under the conjecture)",
    "resid_corr": "its correlation effect: the largest |lag-1 or cross-channel correlation| (0 under the conjecture; no cross-channel one for grey)",
    "resid_scale": "its scale effect: sd of the log per-image scale (0 under the conjecture)",
    "copies_px": "fraction of samples that are pixel near-copies of a training image",
    "copies_feat": "fraction of samples that are Inception-feature near-copies of a training image",
    "img_per_s": "training throughput, images per second", "n_params": "the network's parameter count",
    "n_train": "training images",
}


def headline(paths: dict) -> dict:
    """The run at a glance, the 15 values of HEADLINE: what dvc.yaml declares as the pipeline's `metrics` (so that
    `dvc exp show` fits a screen); each stage's own files keep every diagnostic."""
    ev, train, speed = read_json(paths["evaluate_metrics"]), read_json(paths["train_metrics"]), read_json(paths["train_speed"])
    res, mem, prep = read_json(paths["residual_metrics"]), read_json(paths["memorization_metrics"]), read_json(paths["prepare_stats"])
    values = {
        "fid": ev["fid"], "kid": ev["kid"], "kid_std": ev["kid_std"], "precision": ev["precision"], "recall": ev["recall"],
        "val_loss": train.get("val", {}).get("loss"),
        "resid_ok": bool(res["chi2_verdict"]), "resid_kurt": res["chi2_kurtosis"],
        "resid_corr": max((abs(r) for r in (res.get(f"chi2_rho_{a}") for a in ("h", "v", "c")) if r is not None), default=None),  # no rho_c: grey
        "resid_scale": res["chi2_scale"],
        "copies_px": mem["mem_near_copy_fraction_pixel"], "copies_feat": mem["mem_near_copy_fraction_feature"],
        "img_per_s": speed["img_per_s"], "n_params": speed["params"], "n_train": prep["train"],
    }
    return {k: values[k] for k in HEADLINE}


def build(paths: dict, params: dict, out: Path) -> str:
    """paths: key -> Path of every input (INPUTS; `inputs()` reads them from dvc.yaml). Returns the markdown."""
    d = out.parent
    img = lambda key, alt: f"![{alt}]({_rel(paths[key], d)})"  # noqa: E731
    prep = read_json(paths["prepare_stats"])
    sched = read_json(paths["schedule_metrics"])
    train = read_json(paths["train_metrics"])
    speed = read_json(paths["train_speed"])
    res = read_json(paths["residual_metrics"])
    ev = read_json(paths["evaluate_metrics"])
    smp = read_json(paths["sampling"])
    terminal = pd.read_csv(paths["schedule_table"])
    by_t = pd.read_csv(paths["loss_by_t"])
    sweep = pd.read_csv(paths["sweep_table"])
    mem = read_json(paths["memorization_metrics"])
    best = sweep.loc[sweep["kid"].idxmin()]
    sweep_line = (f"lowest KID {best['kid']:.4f} ± {best['kid_std']:.4f} with {best['sampler'].upper()} {int(best['steps'])} steps"
                  + (f", eta {best['eta']:g}" if best["sampler"] == "ddim" else "")
                  + f" ({int(best['n_generated'])} samples per setting vs {int(best['n_reference'])} training images; FID at this N is biased, read KID)")
    chi = R.from_metrics(R.CheckResult, res, "chi2_")
    spikes = R.from_metrics(R.SpikeResult, res, "spike_")
    mem_line = R.from_metrics(Memorization, mem, "mem_").reading()
    warn_T = (
        f"\n> **Warning:** sqrt(alpha_bar_T) = {sched['sqrt_alpha_bar_T']:.3g} is above the threshold "
        f"{params['schedule']['max_sqrt_alpha_bar_T']}: x_T is not close to N(0, I).\n"
        if sched["x_T_not_pure_noise"]
        else ""
    )
    warn_fid = (
        f"\n> **Note:** FID from {ev['n_generated']} generated and {ev['n_reference']} reference images is strongly biased upward "
        "at this N (it is only comparable between runs with the same N); KID is unbiased and is the figure to compare.\n"
        if ev["fid_small_sample_bias"]
        else ""
    )
    m = params.get("model", {})
    w = smp.get("guidance", 1.0)  # sampling.json of runs before autoguidance has no such key: none
    guided = f", autoguided (w = {w:g}, by the EMA after {smp.get('guide_fraction', 0):g} of the epochs)" if w != 1 else ""
    md = f"""# DDPM experiment report

T = {params['T']}, seed = {params['seed']}, schedule = {params['schedule']['name']}, {prep['image_size']}x{prep['image_size']} images,
U-Net ch {m.get('ch')} x {m.get('ch_mult')}, {m.get('num_res_blocks')} residual block(s) per level, attention at {m.get('attn_resolutions')} ({speed['params'] / 1e6:.2f}M parameters),
sampler {smp['sampler']} with {smp['steps']} steps{guided}.

## Headline

{_table([
    ("FID (vs training split)", ev['fid']),
    ("KID ± std", f"{ev['kid']:.4f} ± {ev['kid_std']:.4f}"),
    ("images: generated / reference", f"{ev['n_generated']} / {ev['n_reference']}"),
    ("KID subsets x subset size", f"{ev['kid_subsets']} x {ev['kid_subset_size']}"),
    (f"precision / recall (k = {ev['prc_k']})", f"{ev['precision']:.3f} / {ev['recall']:.3f}"),
    ("validation loss (EMA)", train.get('val', {}).get('loss')),
    ("chi-squared check", "consistent" if chi.verdict else "not consistent: " + ", ".join(chi.failed()) + " fail"),
    ("near-copies (pixel / feature)", f"{100 * mem['mem_near_copy_fraction_pixel']:.1f}% / {100 * mem['mem_near_copy_fraction_feature']:.1f}%"),
    ("sqrt(alpha_bar_T)", sched['sqrt_alpha_bar_T']),
])}
{warn_fid}
{prc_reading(ev)}

{img('grid', 'samples')}

Denoising trajectories (rows: images, columns: x_t from t = T to 0; [animated]({_rel(paths['trajectory_gif'], d)})):

{img('trajectory', 'trajectory')}

## Data

{prep['used']} usable images of {prep['files']} ({prep['skipped']} skipped), {prep['train']} train / {prep['val']} validation,
squared by `{prep['square']}`, resized to {prep['image_size']} px.

{img('contact_sheet', 'training images')} {img('raw_sizes', 'raw sizes')}

## Noise schedule

{schedule_reading(sched)}
{warn_T}
{terminal.to_markdown(index=False, floatfmt='.4g')}

{img('schedule_plot', 'sqrt alpha bar')}

Forward process on one training image at t = {sched['forward_t']}:

{img('forward', 'forward process')}

## Training

{train.get('step', 0) + 1} epochs; final train loss {fmt(train.get('train', {}).get('loss'))}, validation loss {fmt(train.get('val', {}).get('loss'))} (EMA weights),
{speed['img_per_s']:.0f} images/s, {speed['seconds']:.0f} s of training{' (resumed from epoch %d)' % speed['resumed_from_epoch'] if speed['resumed_from_epoch'] else ''}.

{img('loss_plot', 'loss curves')}

## Residuals: the chi-squared check

{residuals_section(chi, spikes, by_t, img, res)}

## Sampler sweep

**Reading:** {sweep_line}.

{sweep.to_markdown(index=False, floatfmt='.4g')}

{img('sweep_plot', 'sampler sweep')}

## Memorization

**Reading:** {mem_line}.

{_table([(k.removeprefix('mem_').replace('_', ' '), v) for k, v in mem.items()])}

{img('nn_distances', 'nearest-neighbour distances')}

Closest samples (top) and their nearest training images (bottom, possibly mirrored):

{img('closest_pairs', 'closest pairs')}
"""
    write_text(out, md)
    return md


def prc_reading(ev: dict) -> str:
    """How to read precision and recall, with the N and k they were computed at."""
    return (f"Precision and recall (Kynkäänniemi et al. 2019) on Inception pool features, {ev['n_generated']} generated vs "
            f"{ev['n_reference']} training images, manifolds as unions of k-NN balls with k = {ev['prc_k']}: precision "
            f"{ev['precision']:.3f} is the share of samples inside the training images' manifold (realism), recall "
            f"{ev['recall']:.3f} the share of training images inside the samples' manifold (coverage). Low precision: "
            "samples off the data (blobs); low recall: missing modes (collapse); both near 1 with near-copies: memorization.")


def training_reading(m: dict) -> str:
    """How the check's effect sizes moved between the first and the last validation point (the trainer logs them)."""
    parts = [f"{name} {m[f'training_{k}_first']:.3g} -> {m[f'training_{k}_last']:.3g}"
             for k, name in (("excess_kurtosis", "excess kurtosis"), ("rho_h", "horizontal lag-1 correlation"),
                             ("rho_v", "vertical lag-1 correlation"), ("rho_c", "correlation across channels"))
             if f"training_{k}_first" in m]
    if not parts:
        return "not logged by this run's trainer."
    return ("from the first to the last validation point (EMA weights, fixed validation draws; independent Gaussian "
            "residuals give 0 for each): " + "; ".join(parts) + ".")


def residuals_section(chi: R.CheckResult, spikes: R.SpikeResult, by_t: pd.DataFrame, img, metrics: dict | None = None) -> str:
    """The chi-squared check: the verdict, one sentence per component, every test, sigma^2(t) and the figures."""
    tests = ["| component | test | statistic | p | effect [95% CI] | rejected |", "|---|---|---|---|---|---|"]
    for comp, names in R.COMPONENTS.items():
        for n in names:
            x = chi.test(n)
            if not math.isfinite(x.statistic):  # e.g. the channel correlation of one-channel images: no such test
                tests.append(f"| {comp} | {R.TEST_LABELS[n]} | n/a | n/a | n/a (not defined for this data) | not tested |")
                continue
            tests.append(f"| {comp} | {R.TEST_LABELS[n]} | {fmt(x.statistic)} | {x.p:.2g} | {x.effect:.4g} [{x.lo:.4g}, {x.hi:.4g}] | {fmt(x.rejected)} |")
    return f"""**Verdict:** {chi.verdict_reading()}.

- {chi.marginal_reading()}.
- {chi.correlation_reading()}.
- {chi.scale_reading()}.
- Loss spikes: {spikes.reading()}.

{chi.n_rows} residual rows (validation images x noise draws at {chi.n_t} t values, at least {chi.rows_per_t_min} rows per t), D = {chi.D} elements each;
each test's p-value is from its null distribution, and Holm's step-down over the {chi.n_tests} tests keeps the family-wise
false-alarm rate at {chi.alpha:g}. Effects are pooled over the t grid (narrow strata at small t). The KS distance of z^2 from
chi-squared(1) (descriptive, not a test) is {chi.ks:.4f}.

{chr(10).join(tests)}

sigma^2(t), the validation MSE at each t of the grid, with its 95% CI over rows (the loss-spike prediction integrates it over t
with the stratum weights; observed / predicted epoch spread {fmt(spikes.observed_std, 3)} / {fmt(spikes.predicted_std, 3)}):

{img('loss_by_t_plot', 'sigma^2(t)')}

{by_t.to_markdown(index=False, floatfmt='.4g')}

Standardised residuals z = r / sigma_hat(t) against N(0, 1), and the scale of each image's top half against its bottom half:

{img('qq', 'QQ plot')}

Autocorrelation of the residual inside an image by lag, across channels, and the statistics by t:

{img('autocorr', 'autocorrelation')}

{img('spikes', 'loss spikes')}

Over training: {training_reading(metrics or {})}

{img('over_training', 'the check over training')}
"""


def schedule_reading(s: dict) -> str:
    return (f"{s['schedule']} schedule, T = {s['T']}: alpha_bar_T = {s['alpha_bar_T']:.3g}, sqrt(alpha_bar_T) = {s['sqrt_alpha_bar_T']:.3g}, "
            f"terminal SNR = {s['terminal_snr']:.3g}.")


@command("report")
def main(argv=None):
    ap = stage_parser(__doc__)
    ap.add_argument("--dvc-yaml", default=Path("dvc.yaml"), type=Path, help="the pipeline whose outputs are reported")
    ap.add_argument("--out", required=True, type=Path, help="report .md")
    ap.add_argument("--metrics", type=Path, help="also write the headline metrics (15 values) to this JSON file")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    paths = inputs(args.dvc_yaml)
    absent = [str(p) for p in paths.values() if not p.exists()]
    if absent:
        raise DataError(f"inputs not found: {', '.join(absent)}; run `dvc repro` to produce them")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build(paths, P.model_dump(mode="json"), args.out)
    if args.metrics is not None:
        write_json(args.metrics, headline(paths), sort_keys=False)
    print(f"report: {args.out}" + (f", {args.metrics}" if args.metrics is not None else ""))


if __name__ == "__main__":
    main()
