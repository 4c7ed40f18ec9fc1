"""Training (Ho et al. Algorithm 1) with EMA, validation loss, and exact resume.

All randomness of a step (batch order, flips, t, noise, dropout) is drawn from generators seeded
by named streams (core.streams) of (seed, epoch) and (seed, step). A resumed run therefore continues with exactly the numbers an
uninterrupted run would have used; no RNG state has to be saved, and nothing depends on how
often the run was interrupted. Checkpoint files: core.checkpoint; which state a run may resume
from: core.state; device, precision and processes: core.runtime; the config: core.train_config.
"""

from __future__ import annotations

import copy
import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddpmlab.core.checkpoint import CHECKPOINT_FORMAT, canonical, save_atomic
from ddpmlab.core.errors import DataError, UserError
from ddpmlab.core.images import to_model
from ddpmlab.core.names import T_SAMPLINGS
from ddpmlab.core.residuals.stats import training_stats
from ddpmlab.core.runtime import Runtime, make_runtime
from ddpmlab.core.sampling import (
    as_eps_predictor,
    eps_space_factor,
    per_sample_loss,
)
from ddpmlab.core.schedule import Schedule, extract, q_sample
from ddpmlab.core.state import StateFile, resume_key
from ddpmlab.core.streams import Stream, stream_seed, torch_generator
from ddpmlab.core.train_config import TrainConfig, TrainSetup
from ddpmlab.core.unet import UNet, UNetConfig, count_params


class TrainingDiverged(UserError):
    """The loss became non-finite; the message names the step and what to lower."""


# ---------------------------------------------------------------------------------------------
# Pieces of a step


def lr_at(step: int, lr: float, warmup_steps: int, decay: str = "none", total_steps: int = 0) -> float:
    """Linear warm-up to lr over warmup_steps, then constant (Ho et al.; decay "none") or a half cosine from lr
    at the end of the warm-up to 0 after step total_steps - 1 (decay "cosine", Loshchilov & Hutter 2017)."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if decay == "cosine" and total_steps > warmup_steps:
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps + 1) / (total_steps - warmup_steps))))
    return lr


def lr_for(cfg: TrainConfig, step: int, n_train: int) -> float:
    """The learning rate (cfg.lr, warmup_steps, lr_decay) at global step `step` of a run over n_train images."""
    return lr_at(step, cfg.lr, cfg.warmup_steps, cfg.lr_decay, cfg.epochs * math.ceil(n_train / cfg.batch_size))


def guide_epoch(cfg: TrainConfig) -> int:
    """The epoch after which the EMA is kept as the autoguidance network: round(guide_fraction * epochs), at least 1;
    0 when guide_fraction is 0 (none kept)."""
    return 0 if cfg.guide_fraction == 0 else max(1, round(cfg.guide_fraction * cfg.epochs))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, one fused foreach call over all tensors."""
    e, m = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(e, m, 1.0 - decay)


def ema_decay_at(step: int, decay: float, warmup: float = 10.0) -> float:
    """Warm the EMA up so early weights are not frozen in: min(decay, (1+n)/(c+n)) with c = warmup (TF's EMA: 10).
    While the warm-up binds, the EMA weighs the last ~n/(c-1) steps; c = 2 is the plain mean of all iterates."""
    return min(decay, (1 + step) / (warmup + step))


def loss_weights(sched: Schedule, t: torch.Tensor, gamma: float, prediction: str = "eps") -> torch.Tensor:
    """Per-sample weights of per_sample_loss (in the prediction's own space). Min-SNR-gamma (Hang et al. 2023,
    eq. 7 and its v form): min(SNR_t, gamma) / SNR_t for eps, min(SNR_t, gamma) / (SNR_t + 1) for v, with
    SNR_t = a_bar_t / (1 - a_bar_t); both are the same weight on the eps-space error. gamma 0: all ones
    (Ho et al.'s simple loss for eps; the plain v loss for v)."""
    if gamma == 0:
        return torch.ones(len(t), device=t.device)
    snr = sched.alpha_bar / (1.0 - sched.alpha_bar)
    return extract(np.minimum(snr, gamma) / (snr if prediction == "eps" else snr + 1.0), t, t.shape)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch_generator(seed, Stream.EPOCH_ORDER, epoch))


def step_randomness(batch: int, T: int, shape, seed: int, step: int, device, t_sampling: str = "uniform") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t [B], noise [B, C, H, W], flip mask [B]) for global step `step`.

    t_sampling "uniform": B independent uniform t (Ho et al.). "stratified": the low-discrepancy sampler of
    Kingma et al. 2021 (VDM, appendix I.1): one uniform offset u, t_i = floor(T * ((u + i/B) mod 1)), so
    every batch holds exactly one t from each of B equal strata of 0..T-1. Each t_i is still uniform on
    0..T-1 (the loss is unbiased, the same objective); the batch's loss varies less from step to step."""
    if t_sampling not in T_SAMPLINGS:
        raise ValueError(f"t_sampling must be one of {T_SAMPLINGS}, got {t_sampling!r}")
    g = torch_generator(seed, Stream.TRAIN_NOISE, step, device=device)
    if t_sampling == "uniform":
        t = torch.randint(0, T, (batch,), generator=g, device=device)
    else:
        u = torch.rand((), generator=g, device=device, dtype=torch.float64)
        frac = torch.remainder(u + torch.arange(batch, device=device, dtype=torch.float64) / batch, 1.0)
        t = (frac * T).floor().long().clamp_(max=T - 1)
    noise = torch.randn((batch, *shape), generator=g, device=device)
    flip = torch.rand((batch,), generator=g, device=device) < 0.5
    return t, noise, flip


def fixed_validation_draws(n: int, draws: int, T: int, shape, seed: int):
    """The same (t, noise) for every validation evaluation, so epochs are comparable. [n*draws]."""
    g = torch_generator(seed, Stream.VALIDATION)
    t = torch.randint(0, T, (n * draws,), generator=g)
    noise = torch.randn((n * draws, *shape), generator=g)
    return t, noise


@torch.no_grad()
def validation_residuals(model, sched: Schedule, val_x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: int) -> torch.Tensor:
    """r = eps - eps_theta(x_t, t) for every fixed validation draw -> [n*draws, C, H, W] float32 (on the device).

    val_x [n, C, H, W]; t [n*draws], noise [n*draws, C, H, W] from fixed_validation_draws.
    """
    was_training = model.training
    model.eval()
    draws = len(t) // len(val_x)
    x0 = val_x.repeat(draws, 1, 1, 1)
    rs = []
    for i in range(0, len(x0), batch):
        tt, eps = t[i : i + batch].to(x0.device), noise[i : i + batch].to(x0.device)
        rs.append(eps - model(q_sample(sched, x0[i : i + batch], tt, eps), tt).float())
    model.train(was_training)
    return torch.cat(rs)


def validation_loss(model, sched: Schedule, val_x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: int) -> float:
    """Ho et al. eq. 14 on the fixed validation draws: mean over draws of ||r||^2 / (C*H*W)."""
    return float(validation_residuals(model, sched, val_x, t, noise, batch).pow(2).flatten(1).mean(1).mean())


def validation_record(ema, model, sched: Schedule, vx, vt, vnoise, batch: int) -> dict:
    """Validation loss of the EMA and raw weights, and a small version of the residual check on the EMA
    residuals (excess kurtosis, lag-1 correlations; residuals.stats), so its course over training is logged."""
    r = validation_residuals(ema, sched, vx, vt, vnoise, batch)
    rec = {"val/loss": float(r.pow(2).flatten(1).mean(1).mean()),
           "val/loss_raw": validation_loss(model, sched, vx, vt, vnoise, batch)}
    stats = training_stats(r.cpu().numpy())
    return rec | {f"val/resid_{k}": v for k, v in stats.items() if math.isfinite(v)}


def make_networks(model_cfg: UNetConfig, cfg: TrainConfig, rt: Runtime) -> tuple[UNet, UNet, torch.optim.Optimizer]:
    """The network on the runtime's device and layout (weights from torch's global generator), its EMA copy
    and the AdamW optimizer: what train() runs and the benchmark times."""
    model = UNet(model_cfg).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay,
                            fused=rt.device.type == "cuda")
    return model, ema, opt


def train_step(net, model, ema, opt, sched: Schedule, xs: torch.Tensor, idx: torch.Tensor, step: int, cfg: TrainConfig, seed: int,
               rt: Runtime) -> torch.Tensor:
    """One optimisation step on the global batch `idx`; returns [sum of per-sample losses, count] over all ranks.

    On the CPU a non-finite loss raises TrainingDiverged before the update. On CUDA the check would
    stop the host every step, so it is left to the caller (train: once per epoch, before any checkpoint).

    xs: the training set on the device [N, C, H, W] in [-1, 1]. The randomness of the whole global
    batch is drawn identically on every rank and each rank takes its shard, so data-parallel
    training follows the single-process run (up to summation order).
    """
    B = len(idx)
    t, noise, flip = step_randomness(B, sched.T, xs.shape[1:], seed, step, xs.device, cfg.t_sampling)
    mine = slice(rt.dist.rank, None, rt.dist.world)
    idx, t, noise, flip = idx[mine], t[mine], noise[mine], flip[mine]
    x0 = xs[idx.to(xs.device)]
    if cfg.hflip:
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
    torch.manual_seed(stream_seed(seed, Stream.DROPOUT, step, rt.dist.rank))
    with rt.autocast():
        loss_each = per_sample_loss(net, sched, x0, t, rt.layout(noise), cfg.prediction)
    # the gradient is of the weighted loss in the network's own space; the logged loss is the unweighted
    # eps-space one, comparable across weightings and predictions.
    # sum over my shard / global batch, times world size: DDP averages gradients over ranks, so the
    # applied gradient is that of the global-batch mean, exactly as in single-process training
    loss = (loss_each * loss_weights(sched, t, cfg.min_snr_gamma, cfg.prediction)).sum() * (rt.dist.world / B)
    logged = loss_each.detach() * eps_space_factor(sched, t, cfg.prediction)
    stats = torch.stack([logged.sum(), torch.full((), float(len(idx)), device=loss.device)])  # no host copy
    if rt.dist.world > 1:
        import torch.distributed as d

        d.all_reduce(stats)  # every rank sees the same global loss, so all stop together on NaN
    if not rt.defer_checks and not torch.isfinite(stats[0]):
        raise TrainingDiverged(f"loss is {float(stats[0] / stats[1])} at step {step}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    for group in opt.param_groups:
        group["lr"] = lr_for(cfg, step, len(xs))
    opt.step()
    ema_update(ema, model, ema_decay_at(step, cfg.ema_decay, cfg.ema_warmup))
    return stats


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    history: list  # per epoch: epoch, step, train/loss, lr, and val/loss, val/loss_raw where measured
    model_path: Path
    resumed_from_epoch: int
    params: int
    # [images, seconds] per epoch since the run began (kept in the resumable state, never in the model
    # file: timings differ between identical runs)
    timings: list = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Wall time of the epochs this process ran."""
        return sum(s for _, s in self.timings[self.resumed_from_epoch :])

    @property
    def img_per_s(self) -> float:
        """Throughput of this process's epochs (of the whole run when it had none left to do)."""
        t = self.timings[self.resumed_from_epoch :] or self.timings
        return sum(n for n, _ in t) / sum(s for _, s in t) if t else math.nan


def train(setup: TrainSetup, train_x: np.ndarray, val_x: np.ndarray, state_path: Path, model_path: Path, log=None,
          stop_after_epochs: int | None = None, code: str = "", say=print) -> TrainResult:
    """Train to setup.train.epochs, resuming from this experiment's state (training.state) if there is one.

    train_x, val_x: uint8 [N, H, W, C]. log: callable(record) per epoch (dvclive in the stage; rank 0
    only), replayed for the resumed epochs. stop_after_epochs: stop early (tests simulate an
    interruption). code: a fingerprint of the code that trains (part of the resume key; the train stage
    passes the hash of its import closure, so changed code never resumes an old state).
    Under torchrun each rank trains its shard of every batch with DDP; rank 0 logs and writes files.
    """
    cfg, seed = setup.train, setup.seed
    rt = make_runtime(cfg.device, cfg.bf16)
    device, dist = rt.device, rt.dist
    sched = setup.build_schedule()
    key = resume_key(setup.experiment(), train_x, val_x, code)
    store = StateFile(state_path, key, say=say if dist.main else (lambda _: None))

    torch.manual_seed(stream_seed(seed, Stream.WEIGHT_INIT))  # identical on every rank
    model, ema, opt = make_networks(setup.model, cfg, rt)

    # 1. resume: every rank trains the same experiment; the writer moves files into place (parks other
    # experiments' states) and loads, every rank gets its state (other nodes need not share its disk)
    for rank, (other, host) in enumerate(dist.gather((key, socket.gethostname()))):
        if other != key:
            raise DataError(f"rank {rank} on {host} would train other params, data or code than rank {dist.rank} on "
                            f"{socket.gethostname()}: check out the same commit and prepare the same data on every node")
    if dist.main:
        store.prepare()
    dist.barrier()
    start_epoch, step, history, timings = 0, 0, [], []
    guide = None  # the EMA weights after guide_epoch(cfg) epochs (CPU tensors), once reached
    state = dist.broadcast(store.load(map_location=device if dist.world == 1 else "cpu") if dist.main else None)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        guide = state.get("ema_guide")
        timings = [list(t) for t in state.get("timings", [])]
        if dist.main:
            say(f"resuming from {state_path}: epoch {start_epoch}/{cfg.epochs}, step {step}")
    if log and dist.main:
        for rec in history:
            log(rec)

    # 2. the network as executed: DDP wrapper, compiled graph
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    xs = rt.layout(to_model(train_x).to(device))  # small datasets live entirely on the device
    vx = rt.layout(to_model(val_x).to(device))
    vt, vnoise = fixed_validation_draws(len(vx), cfg.val_draws, sched.T, xs.shape[1:], seed)

    def header(epoch):
        """What every checkpoint carries: enough to rebuild the model and to know which run it is."""
        return canonical({"format": CHECKPOINT_FORMAT, "model_config": setup.model.to_dict(), "schedule_config": setup.schedule.to_dict(),
                          "train_config": setup.train_config(), "epoch": epoch, "step": step, "history": history})

    def checkpoint(epoch):
        if dist.main:
            save_atomic({**header(epoch), "resume_key": key, "timings": timings, "model": model.state_dict(), "ema": ema.state_dict(),
                         "optimizer": opt.state_dict(), **({"ema_guide": guide} if guide is not None else {})}, state_path)
        dist.barrier()

    # 3. the epochs
    end_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    steps_per_epoch = math.ceil(len(xs) / cfg.batch_size)
    if dist.main and start_epoch < end_epoch:
        say(f"training {count_params(model) / 1e6:.2f}M params on {device} ({dist.world} process(es)): {len(xs)} images, "
            f"{steps_per_epoch} steps/epoch, epochs {start_epoch + 1}..{end_epoch} of {cfg.epochs}; "
            f"checkpoints to {state_path} after the first epoch and every {cfg.checkpoint_every}")
    result = TrainResult(history, model_path, start_epoch, count_params(model), timings)
    bar = tqdm(range(start_epoch, end_epoch), initial=start_epoch, total=cfg.epochs, desc="train", unit="epoch", disable=not dist.main)
    model.train()
    first_step = True  # torch.compile compiles lazily, on the first call: say so before and after
    for epoch in bar:
        t0 = time.perf_counter()
        totals = torch.zeros(2, device=device)  # accumulated on the device: no per-step host sync
        first_bad = torch.full((), -1, device=device)  # CUDA: the first step with a non-finite loss (rt.defer_checks)
        for idx in epoch_order(len(xs), seed, epoch).to(device).split(cfg.batch_size):
            compiling, first_step = first_step and cfg.compile, False
            if compiling and dist.main:
                bar.write("torch.compile: compiling the U-Net on the first step (a minute or more)...")
                tc = time.perf_counter()
            try:
                stats = train_step(net, model, ema, opt, sched, xs, idx, step, cfg, seed, rt)
            except TrainingDiverged as e:
                raise diverged(str(e), epoch, step, state_path) from None
            totals += stats
            if rt.defer_checks:
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(stats[0]), step, first_bad)
            if compiling and dist.main:
                bar.write(f"torch.compile: first step done in {time.perf_counter() - tc:.1f} s; training")
            step += 1
        total, seen, bad = torch.cat([totals, first_bad.view(1).to(totals.dtype)]).tolist()  # the epoch's one host sync
        if bad >= 0:  # deferred check (CUDA): nothing of this epoch is logged or checkpointed
            raise diverged(f"loss is {total / seen} at step {int(bad)} (found at the end of its epoch)", epoch, int(bad), state_path)
        seconds = time.perf_counter() - t0  # training only: validation below is not throughput
        rec = {"epoch": epoch, "step": step, "train/loss": total / seen, "lr": lr_for(cfg, step - 1, len(xs))}
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
            with rt.autocast():
                rec |= validation_record(as_eps_predictor(ema, sched, cfg.prediction), as_eps_predictor(model, sched, cfg.prediction), sched, vx, vt,
                                         vnoise, 4 * cfg.batch_size)
        if epoch + 1 == guide_epoch(cfg):
            guide = {k: v.detach().cpu().clone().contiguous() for k, v in ema.state_dict().items()}
        history.append(rec)
        timings.append([int(seen), seconds])
        if log and dist.main:
            log(rec)
        bar.set_postfix(loss=f"{rec['train/loss']:.4f}", img_s=f"{seen / seconds:.0f}")
        # the first epoch of every process is checkpointed too: a stall after it is visible at once
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == end_epoch or epoch == start_epoch:
            checkpoint(epoch + 1)
    bar.close()

    if end_epoch == cfg.epochs and dist.main:
        # the final model: EMA weights, config, per-epoch losses (the residuals stage tests them); no
        # timings and no resume key, so identical params and data give a byte-identical file
        ema_cpu = {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        extra = {"ema_guide": guide} if guide is not None else {}  # the autoguidance network
        save_atomic({**header(cfg.epochs), "ema": ema_cpu, **extra, "n_train": len(train_x)}, model_path)
    return result


def diverged(what: str, epoch: int, step: int, state_path: Path) -> TrainingDiverged:
    return TrainingDiverged(f"{what} (epoch {epoch}, step {step}); stopping. The last good checkpoint ({state_path}) is kept. "
                            "Lower the learning rate or clip the gradient norm.")


def final_metrics(history: list) -> dict:
    """The metrics of a run: last train loss, last and best validation loss."""
    val = [r["val/loss"] for r in history if "val/loss" in r]
    return {
        "train_loss": history[-1]["train/loss"],
        "val_loss": val[-1] if val else math.nan,
        "best_val_loss": min(val) if val else math.nan,
        "epochs": len(history),
        "steps": history[-1]["step"],
    }
