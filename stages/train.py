"""Stage `train`: Ho et al. Algorithm 1 with EMA; logs train/validation loss with dvclive; resumes from its state file.

With train.processes > 1 it relaunches itself under torchrun: one process per GPU (NCCL), or
processes on the CPU (gloo); train.batch_size stays the global batch.
"""

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from ddpmlab.config import ModelConfig, ScheduleConfig, TrainConfig, load_params
from ddpmlab.device import resolve_device
from ddpmlab.errors import DataError, ParamError
from ddpmlab.io import write_json
from ddpmlab.reporting.plotting import loss_curves
from ddpmlab.data.splits import load_split
from ddpmlab.training.loop import TrainingDiverged, TrainSetup, final_metrics, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--state", required=True, type=Path, help="resumable training state (kept between runs)")
    ap.add_argument("--model", required=True, type=Path, help="final model: EMA weights + config")
    ap.add_argument("--live", required=True, type=Path, help="dvclive folder (metrics.json, plots/)")
    args = ap.parse_args(argv)
    p = load_params(args.params)
    try:
        setup = TrainSetup(ModelConfig.from_params(p), ScheduleConfig.from_params(p), TrainConfig.from_params(p))
        train_x, val_x = load_split(args.train), load_split(args.val)
    except (ParamError, DataError) as e:
        sys.exit(f"train: {e}")
    if train_x.shape[1] != setup.model_cfg.image_size:
        sys.exit(f"train: {args.train} holds {train_x.shape[1]}px images but prepare.image_size = {setup.model_cfg.image_size}: rerun prepare")
    cfg = setup.train_cfg
    if cfg.processes > 1 and "LOCAL_RANK" not in os.environ:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.processes}"]
        sys.exit(subprocess.call([*launcher, __file__, *(argv if argv is not None else sys.argv[1:])]))
    rank = 0
    if "LOCAL_RANK" in os.environ:
        import torch
        import torch.distributed as dist

        cuda = resolve_device(cfg.device).type == "cuda"
        if cuda and torch.cuda.device_count() < cfg.processes:
            sys.exit(f"train: train.processes = {cfg.processes} but only {torch.cuda.device_count()} GPUs are visible")
        dist.init_process_group("nccl" if cuda else "gloo")
        rank = dist.get_rank()

    if rank == 0:
        from dvclive import Live

        # dvcyaml=False: plots and metrics are declared in dvc.yaml by hand, so dvclive must not edit it
        live_ctx = Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None)
    else:
        live_ctx = contextlib.nullcontext(None)
    with live_ctx as live:

        def log(rec):
            for k in ("train/loss", "val/loss", "val/loss_raw", "lr"):
                if k in rec:
                    live.log_metric(k, rec[k])
            live.next_step()

        try:
            res = train(setup, train_x, val_x, args.state, args.model, log=log if live else None)
        except TrainingDiverged as e:
            sys.exit(f"train: {e}")
    if rank != 0:
        return
    m = final_metrics(res.history)
    recent = res.history[res.resumed_from_epoch:] or res.history[-1:]
    speed = {"img_per_s": sum(r["img_per_s"] for r in recent) / len(recent), "seconds": res.seconds, "params": res.params,
             "resumed_from_epoch": res.resumed_from_epoch, "processes": cfg.processes}
    write_json(args.live / "speed.json", speed)
    loss_curves(res.history, args.live / "loss.png")
    print(f"train: {m['epochs']} epochs, {m['steps']} steps, train loss {m['train_loss']:.4f}, val loss {m['val_loss']:.4f}; "
          f"{speed['img_per_s']:.0f} img/s, {res.seconds:.0f} s, {res.params / 1e6:.2f}M params")


if __name__ == "__main__":
    main()
