"""The per-experiment report: one markdown file in reports/ that reads on its own.

Every figure is linked relative to the report, so it opens in a browser or a markdown viewer
from the repository (or a `dvc pull`ed clone) with images included.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ddpmlab.residuals import check as R
from ddpmlab.io import read_json
from ddpmlab.evaluation.memorization import Memorization


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _fmt(v, digits=4):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return "n/a" if v is None else str(v)


def _table(rows: list[tuple]) -> str:
    out = ["| quantity | value |", "|---|---|"]
    out += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(out)


def build(paths: dict, params: dict, out: Path) -> str:
    """paths: name -> Path of every input (see stages/report.py). Returns the markdown."""
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
    chi_line = R.from_metrics(R.ChiSquaredResult, res, "chi2_").reading()
    spike_line = R.from_metrics(R.SpikeResult, res, "spike_").reading()
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
    md = f"""# DDPM experiment report

T = {params['T']}, seed = {params['seed']}, schedule = {params['schedule']['name']}, {prep['image_size']}x{prep['image_size']} images,
U-Net ch {m.get('ch')} x {m.get('ch_mult')}, {m.get('num_res_blocks')} residual block(s) per level, attention at {m.get('attn_resolutions')} ({speed['params'] / 1e6:.2f}M parameters),
sampler {smp['sampler']} with {smp['steps']} steps.

## Headline

{_table([
    ("FID (vs training split)", ev['fid']),
    ("KID ± std", f"{ev['kid']:.4f} ± {ev['kid_std']:.4f}"),
    ("images: generated / reference", f"{ev['n_generated']} / {ev['n_reference']}"),
    ("KID subsets x subset size", f"{ev['kid_subsets']} x {ev['kid_subset_size']}"),
    ("validation loss (EMA)", train.get('val', {}).get('loss')),
    ("chi-squared verdict", "pass" if res['chi2_verdict'] else "fail"),
    ("near-copies (pixel / feature)", f"{100 * mem['mem_near_copy_fraction_pixel']:.1f}% / {100 * mem['mem_near_copy_fraction_feature']:.1f}%"),
    ("sqrt(alpha_bar_T)", sched['sqrt_alpha_bar_T']),
])}
{warn_fid}
{img('grid', 'samples')}

Denoising trajectories (rows: images, columns: x_t from t = T to 0):

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

{train.get('step', 0) + 1} epochs; final train loss {_fmt(train.get('train', {}).get('loss'))}, validation loss {_fmt(train.get('val', {}).get('loss'))} (EMA weights),
{speed['img_per_s']:.0f} images/s, {speed['seconds']:.0f} s of training{' (resumed from epoch %d)' % speed['resumed_from_epoch'] if speed['resumed_from_epoch'] else ''}.

{img('loss_plot', 'loss curves')}

## Residuals: the chi-squared check

**Reading:** {chi_line}.

**Loss spikes:** {spike_line}.

{_table([
    ("KS distance of z^2 from chi-squared(1)", res['chi2_ks']),
    ("excess kurtosis of z", res['chi2_excess_kurtosis']),
    ("dispersion var(sum z^2) / 2D", res['chi2_dispersion_ratio']),
    ("D = C*H*W", res['chi2_D']),
    ("residual elements tested", res['chi2_n_residuals']),
    ("train-loss spread observed / predicted", res.get('spike_ratio')),
    ("observed epoch std / predicted", f"{_fmt(res.get('spike_observed_std'))} / {_fmt(res.get('spike_predicted_std'))}"),
])}

Validation loss by timestep bin:

{by_t.to_markdown(index=False, floatfmt='.4g')}

{img('loss_by_t_plot', 'loss by t')}
{img('qq', 'QQ plots')}
{img('hist', 'histograms')}
{img('spikes', 'loss spikes')}

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
    out.write_text(md)
    return md


def schedule_reading(s: dict) -> str:
    return (f"{s['schedule']} schedule, T = {s['T']}: alpha_bar_T = {s['alpha_bar_T']:.3g}, sqrt(alpha_bar_T) = {s['sqrt_alpha_bar_T']:.3g}, "
            f"terminal SNR = {s['terminal_snr']:.3g}.")

