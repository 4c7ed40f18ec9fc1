"""The train stage's work, reachable by tests: params and data in, model, state, dvclive log and speed out.

`run_stage` validates everything a user can get wrong (params, data, image size, device) before
any process is launched, relaunches itself under torchrun when train.processes > 1, and on rank 0
logs every epoch with dvclive and writes metrics/speed.json and the loss curves.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ddpmlab.data.splits import load_split
from ddpmlab.device import resolve_device
from ddpmlab.errors import DataError
from ddpmlab.io import write_json
from ddpmlab.reporting.plotting import loss_curves
from ddpmlab.schema import load_params
from ddpmlab.training.loop import TrainSetup, final_metrics, train
from ddpmlab.training.runtime import init_distributed, relaunch_under_torchrun, under_torchrun

# dvclive metrics (reports/train/metrics.json, plots); val/resid_*: the residual check's effect sizes over training
LOGGED = ("train/loss", "val/loss", "val/loss_raw", "lr", "val/resid_excess_kurtosis", "val/resid_rho_h", "val/resid_rho_v", "val/resid_rho_c")


@contextlib.contextmanager
def dvclive_logger(live_dir: Path, enabled: bool):
    """A callable(record) logging LOGGED keys, one dvclive step per epoch; None on ranks other than 0."""
    if not enabled:
        yield None
        return
    from dvclive import Live

    # dvcyaml=False: plots and metrics are declared in dvc.yaml by hand, so dvclive must not edit it
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def log(rec: dict) -> None:
            for k in LOGGED:
                if k in rec:
                    live.log_metric(k, rec[k])
            live.next_step()

        yield log


def run_stage(params: Path, train_npz: Path, val_npz: Path, state: Path, model: Path, live: Path, script: Path, argv: list[str]) -> int:
    """Everything `stages/train.py` does; returns the exit status. Raises ParamsError, DataError,
    DeviceError or TrainingDiverged, each with a one-line message."""
    P = load_params(params)
    train_x, val_x = load_split(train_npz), load_split(val_npz)
    size = P.prepare.image_size
    for path, x in ((train_npz, train_x), (val_npz, val_x)):  # uint8 [N, H, W, C] (load_split checks that)
        if x.shape[1:3] != (size, size) or x.shape[3] != train_x.shape[3]:
            raise DataError(f"{path} holds images of shape {list(x.shape[1:])} but prepare.image_size = {size} "
                            f"and the training split has {train_x.shape[3]} channel(s): rerun prepare")
    setup = TrainSetup.from_params(P, in_channels=int(train_x.shape[3]))
    resolve_device(P.train.device)  # one line now, not a traceback in every worker later
    if P.train.processes > 1 and not under_torchrun():
        return relaunch_under_torchrun(P.train.processes, str(script), argv)
    dist = init_distributed(P.train.device, P.train.processes) if under_torchrun() else None
    main = dist is None or dist.main

    with dvclive_logger(live, main) as log:
        res = train(setup, train_x, val_x, state, model, log=log, entry=script)
    if not main:
        return 0
    m = final_metrics(res.history)
    speed = {"img_per_s": res.img_per_s, "seconds": res.seconds, "params": res.params, "resumed_from_epoch": res.resumed_from_epoch,
             "processes": P.train.processes}
    write_json(live / "speed.json", speed)
    loss_curves(res.history, live / "loss.png")
    print(f"train: {m['epochs']} epochs, {m['steps']} steps, train loss {m['train_loss']:.4f}, val loss {m['val_loss']:.4f}; "
          f"{speed['img_per_s']:.0f} img/s, {res.seconds:.0f} s, {res.params / 1e6:.2f}M params")
    return 0
