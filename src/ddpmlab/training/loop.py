"""Training (Ho et al. Algorithm 1) with EMA, validation loss, and exact resume.

All randomness of a step (batch order, flips, t, noise, dropout) is drawn from generators seeded
by (seed, epoch) and (seed, step). A resumed run therefore continues with exactly the numbers an
uninterrupted run would have used; no RNG state has to be saved, and nothing depends on how
often the run was interrupted.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddpmlab.config import ModelConfig, ScheduleConfig, TrainConfig, fingerprint
from ddpmlab.depgraph import module_closure
from ddpmlab.device import resolve_device
from ddpmlab.diffusion.sampling import derive_seed, per_sample_loss
from ddpmlab.data.images import to_model
from ddpmlab.diffusion.schedule import Schedule
from ddpmlab.model.unet import UNet, count_params

CHECKPOINT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    pass


def code_hash(entry: Path | None = None) -> str:
    """sha256 of every package file `entry` imports, transitively: the same closure dvc.yaml lists as
    the train stage's deps (ddpmlab.depgraph), so no code change that can alter a run resumes into it."""
    src = Path(__file__).resolve().parents[2]
    files = module_closure(Path(entry or __file__), src)
    h = hashlib.sha256()
    for f in sorted(set(files) | ({Path(entry).resolve()} if entry else set())):
        h.update(f.relative_to(src).as_posix().encode() if src in f.parents else f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class TrainSetup:
    model_cfg: ModelConfig
    sched_cfg: ScheduleConfig
    train_cfg: TrainConfig

    def fingerprint(self, train_x: np.ndarray) -> str:
        """Identifies the experiment a checkpoint belongs to (device and bookkeeping excluded)."""
        tc = {k: v for k, v in asdict(self.train_cfg).items() if k not in ("device", "checkpoint_every", "val_every", "processes")}
        return fingerprint(
            {
                "model": self.model_cfg.to_dict(),
                "schedule": asdict(self.sched_cfg),
                "train": tc,
                "data": hashlib.sha256(np.ascontiguousarray(train_x).tobytes()).hexdigest(),
                "code": code_hash(),
            }
        )


# ---------------------------------------------------------------------------------------------
# Pieces of a step


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr over warmup_steps, then constant (Ho et al.)."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, one fused foreach call over all tensors."""
    e, m = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(e, m, 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm the EMA up so early weights are not frozen in (min(decay, (1+n)/(10+n)), as in TF's EMA)."""
    return min(decay, (1 + step) / (10 + step))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, 1, epoch)))


def step_randomness(batch: int, T: int, shape, seed: int, step: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t [B], noise [B, C, H, W], flip mask [B]) for global step `step`."""
    g = torch.Generator(device=device).manual_seed(derive_seed(seed, 2, step))
    t = torch.randint(0, T, (batch,), generator=g, device=device)
    noise = torch.randn((batch, *shape), generator=g, device=device)
    flip = torch.rand((batch,), generator=g, device=device) < 0.5
    return t, noise, flip


def fixed_validation_draws(n: int, draws: int, T: int, shape, seed: int):
    """The same (t, noise) for every validation evaluation, so epochs are comparable. [n*draws]."""
    g = torch.Generator().manual_seed(derive_seed(seed, 3))
    t = torch.randint(0, T, (n * draws,), generator=g)
    noise = torch.randn((n * draws, *shape), generator=g)
    return t, noise


@torch.no_grad()
def validation_loss(model, sched: Schedule, val_x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, batch: int) -> float:
    was_training = model.training
    model.eval()
    draws = len(t) // len(val_x)
    x0 = val_x.repeat(draws, 1, 1, 1)
    losses = [per_sample_loss(model, sched, x0[i : i + batch], t[i : i + batch].to(x0.device), noise[i : i + batch].to(x0.device)) for i in range(0, len(x0), batch)]
    model.train(was_training)
    return float(torch.cat(losses).mean())


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_atomic(obj: dict, path: Path) -> None:
    """Write then rename: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    # weights_only: a checkpoint is data; loading it must not execute pickled code
    return torch.load(path, map_location=map_location, weights_only=True)


def build_model_from_checkpoint(ckpt: dict, device="cpu", key: str = "ema") -> tuple[UNet, Schedule, dict]:
    """Rebuild the network and schedule from a checkpoint alone (its stored config)."""
    cfg = ModelConfig(**ckpt["model_config"])
    model = UNet(cfg)
    model.load_state_dict(ckpt[key])
    sched = ScheduleConfig(**ckpt["schedule_config"]).build()
    return model.to(device).eval(), sched, ckpt


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    history: list
    model_path: Path
    resumed_from_epoch: int
    seconds: float
    params: int


@dataclass(frozen=True)
class Dist:
    """This process's place in a torch.distributed job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "Dist":
        import torch.distributed as d

        return cls(d.get_rank(), d.get_world_size()) if d.is_available() and d.is_initialized() else cls()


@dataclass
class Runtime:
    """How the math is executed on this device: precision, memory layout, compilation, sharding."""

    device: torch.device
    dist: Dist
    bf16: bool
    channels_last: bool

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def make_runtime(cfg: TrainConfig) -> Runtime:
    dist = Dist.current()
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cuda = device.type == "cuda"
    # bf16 autocast and channels_last pay off on tensor cores; on the CPU everything stays fp32
    return Runtime(device, dist, bf16=cuda and cfg.bf16, channels_last=cuda)


def train_step(net, model, ema, opt, sched: Schedule, xs: torch.Tensor, idx: torch.Tensor, step: int, cfg: TrainConfig, rt: Runtime) -> torch.Tensor:
    """One optimisation step on the global batch `idx`; returns [sum of per-sample losses, count] over all ranks.

    The randomness of the whole global batch is drawn identically on every rank and each rank takes
    its shard, so data-parallel training follows the single-process run (up to summation order).
    """
    B = len(idx)
    t, noise, flip = step_randomness(B, sched.T, xs.shape[1:], cfg.seed, step, xs.device)
    mine = slice(rt.dist.rank, None, rt.dist.world)
    idx, t, noise, flip = idx[mine], t[mine], noise[mine], flip[mine]
    x0 = xs[idx.to(xs.device)]
    if cfg.hflip:
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
    torch.manual_seed(derive_seed(cfg.seed, 4, step, rt.dist.rank))  # dropout
    with rt.autocast():
        loss_each = per_sample_loss(net, sched, x0, t, rt.layout(noise))
    # sum over my shard / global batch, times world size: DDP averages gradients over ranks, so the
    # applied gradient is that of the global-batch mean, exactly as in single-process training
    loss = loss_each.sum() * (rt.dist.world / B)
    stats = torch.stack([loss_each.detach().sum(), torch.tensor(float(len(idx)), device=loss.device)])
    if rt.dist.world > 1:
        import torch.distributed as d

        d.all_reduce(stats)  # every rank sees the same global loss, so all stop together on NaN
    if not torch.isfinite(stats[0]):
        raise TrainingDiverged(f"loss is {float(stats[0] / stats[1])} at step {step}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    opt.step()
    ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
    return stats


def train(
    setup: TrainSetup,
    train_x: np.ndarray,
    val_x: np.ndarray,
    state_path: Path,
    model_path: Path,
    log=None,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train to setup.train_cfg.epochs, resuming from `state_path` when it matches this experiment.

    log: callable(record: dict) per epoch (dvclive in the stage; called on rank 0 only).
    stop_after_epochs: stop early (tests use it to simulate an interruption at an epoch boundary).
    Under torchrun (torch.distributed initialised) each rank trains its shard of every batch with
    DDP; rank 0 logs and writes checkpoints.
    """
    cfg, mcfg = setup.train_cfg, setup.model_cfg
    rt = make_runtime(cfg)
    device, dist = rt.device, rt.dist
    sched = setup.sched_cfg.build()
    fp = setup.fingerprint(train_x)

    torch.manual_seed(cfg.seed)  # weight init: identical on every rank
    model = UNet(mcfg).to(device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")

    start_epoch, step, history = 0, 0, []
    if state_path.is_file():
        state = load_checkpoint(state_path, map_location=device)
        if state.get("format") == CHECKPOINT_FORMAT and state.get("fingerprint") == fp:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            start_epoch, step, history = state["epoch"], state["step"], state["history"]
            if dist.main:
                print(f"resuming from {state_path}: epoch {start_epoch}/{cfg.epochs}, step {step}")
        elif dist.main:
            print(f"{state_path} belongs to a different experiment (params, data or code changed): starting afresh")
    if log and dist.main:
        for rec in history:
            log(rec)

    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    xs = rt.layout(to_model(train_x).to(device))  # small datasets live entirely on the device
    vx = rt.layout(to_model(val_x).to(device))
    vt, vnoise = fixed_validation_draws(len(vx), cfg.val_draws, sched.T, xs.shape[1:], cfg.seed)

    def header(epoch):
        """What every checkpoint carries: enough to rebuild the model and to know which run it is."""
        return {"format": CHECKPOINT_FORMAT, "fingerprint": fp, "model_config": mcfg.to_dict(), "schedule_config": asdict(setup.sched_cfg),
                "train_config": asdict(cfg), "epoch": epoch, "step": step, "history": history}

    def checkpoint(epoch):
        if dist.main:
            save_atomic({**header(epoch), "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict()}, state_path)
        if dist.world > 1:
            import torch.distributed as d

            d.barrier()

    t_start = time.perf_counter()
    end_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    bar = tqdm(range(start_epoch, end_epoch), initial=start_epoch, total=cfg.epochs, desc="train", unit="epoch", disable=not dist.main)
    model.train()
    for epoch in bar:
        t0 = time.perf_counter()
        totals = torch.zeros(2, device=device)  # accumulated on the device: no per-step host sync
        for idx in epoch_order(len(xs), cfg.seed, epoch).split(cfg.batch_size):
            try:
                totals += train_step(net, model, ema, opt, sched, xs, idx, step, cfg, rt)
            except TrainingDiverged as e:
                raise TrainingDiverged(
                    f"{e} (epoch {epoch}, step {step}); stopping. The last good checkpoint ({state_path}) is kept. "
                    "Lower train.lr or set train.grad_clip."
                ) from None
            step += 1
        total, seen = totals.tolist()
        rec = {"epoch": epoch, "step": step, "train/loss": total / seen, "lr": lr_at(step - 1, cfg), "img_per_s": seen / (time.perf_counter() - t0)}
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
            with rt.autocast():
                rec["val/loss"] = validation_loss(ema, sched, vx, vt, vnoise, 4 * cfg.batch_size)
                rec["val/loss_raw"] = validation_loss(model, sched, vx, vt, vnoise, 4 * cfg.batch_size)
        history.append(rec)
        if log and dist.main:
            log(rec)
        bar.set_postfix(loss=f"{rec['train/loss']:.4f}", img_s=f"{rec['img_per_s']:.0f}")
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == end_epoch:
            checkpoint(epoch + 1)
    bar.close()

    if end_epoch == cfg.epochs and dist.main:
        # the final model: EMA weights only, plus the per-epoch losses the residuals stage tests
        ema_cpu = {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        save_atomic({**header(cfg.epochs), "ema": ema_cpu, "n_train": len(train_x)}, model_path)
    return TrainResult(history, model_path, start_epoch, time.perf_counter() - t_start, count_params(model))


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
