"""Stage `train`: Ho et al. Algorithm 1 with EMA; logs train/validation loss with dvclive; resumes from its state file."""

import argparse
import sys
from pathlib import Path

from ddpmlab.config import ModelConfig, ScheduleConfig, TrainConfig, load_params
from ddpmlab.errors import DataError, ParamError
from ddpmlab.io import write_json
from ddpmlab.plotting import loss_curves
from ddpmlab.prepare import load_split
from ddpmlab.train import TrainingDiverged, TrainSetup, final_metrics, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
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

    from dvclive import Live

    # dvcyaml=False: plots and metrics are declared in dvc.yaml by hand, so dvclive must not edit it
    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def log(rec):
            for k in ("train/loss", "val/loss", "val/loss_raw", "lr"):
                if k in rec:
                    live.log_metric(k, rec[k])
            live.next_step()

        try:
            res = train(setup, train_x, val_x, args.state, args.model, log=log)
        except TrainingDiverged as e:
            sys.exit(f"train: {e}")
    m = final_metrics(res.history)
    recent = res.history[res.resumed_from_epoch:] or res.history[-1:]
    speed = {"img_per_s": sum(r["img_per_s"] for r in recent) / len(recent), "seconds": res.seconds, "params": res.params, "resumed_from_epoch": res.resumed_from_epoch}
    write_json(args.live / "speed.json", speed)
    loss_curves(res.history, args.live / "loss.png")
    print(f"train: {m['epochs']} epochs, {m['steps']} steps, train loss {m['train_loss']:.4f}, val loss {m['val_loss']:.4f}; "
          f"{speed['img_per_s']:.0f} img/s, {res.seconds:.0f} s, {res.params / 1e6:.2f}M params")


if __name__ == "__main__":
    main()
