"""Stage `train`: Ho et al. Algorithm 1 with EMA; logs train/validation loss with dvclive; resumes from its state file.

Resumes only the same experiment (params, data and code: core.state); another experiment's
state is parked beside --state, not overwritten. With train.processes > 1 it relaunches itself under
torch's elastic launcher (torchrun's): one process per GPU (NCCL), or processes on the CPU (gloo);
train.batch_size stays global. With train.nodes > 1 this node leads a run that the others join at
train.rendezvous (`ddpmlab join` there). Under a launcher of your own (torchrun, srun) it trains as the
worker it was started as. Only one process writes; a failed or lost process stops the run in one line,
the last checkpoint kept.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from ddpmlab.core.device import resolve_device
from ddpmlab.core.errors import DataError
from ddpmlab.core.runtime import (
    ROLE,
    adopt_slurm_env,
    init_distributed,
    launch,
    under_torchrun,
)
from ddpmlab.core.training import final_metrics, train
from ddpmlab.pipeline.command import WORKER_TRACEBACK, command, stage_parser
from ddpmlab.pipeline.configs import train_setup
from ddpmlab.pipeline.data.splits import load_split
from ddpmlab.pipeline.imports import code_fingerprint
from ddpmlab.pipeline.io import write_json
from ddpmlab.pipeline.schema import load_params

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


def run_stage(params: Path, train_npz: Path, val_npz: Path, state: Path, model: Path, live: Path, argv: list[str]) -> int:
    """Everything the stage does; returns the exit status. Raises ParamsError, DataError, DeviceError
    or TrainingDiverged, each with a one-line message."""
    P = load_params(params)
    train_x, val_x = load_split(train_npz), load_split(val_npz)
    size = P.prepare.image_size
    for path, x in ((train_npz, train_x), (val_npz, val_x)):  # uint8 [N, H, W, C] (load_split checks that)
        if x.shape[1:3] != (size, size) or x.shape[3] != train_x.shape[3]:
            raise DataError(f"{path} holds images of shape {list(x.shape[1:])} but prepare.image_size = {size} "
                            f"and the training split has {train_x.shape[3]} channel(s): rerun prepare")
    setup = train_setup(P, in_channels=int(train_x.shape[3]))
    resolve_device(P.train.device)  # one line now, not a traceback in every worker later
    if (P.train.processes > 1 or P.train.nodes > 1) and not under_torchrun():
        return launch_workers(P, state, argv)
    dist = init_distributed(P.train.device, P.train.processes) if under_torchrun() else None
    main = dist is None or dist.main

    with dvclive_logger(live, main) as log:
        res = train(setup, train_x, val_x, state, model, log=log, code=code_fingerprint())
    if not main:
        return 0
    m = final_metrics(res.history)
    speed = {"img_per_s": res.img_per_s, "seconds": res.seconds, "params": res.params, "resumed_from_epoch": res.resumed_from_epoch,
             "processes": 1 if dist is None else dist.world}
    write_json(live / "speed.json", speed)
    print(f"train: {m['epochs']} epochs, {m['steps']} steps, train loss {m['train_loss']:.4f}, val loss {m['val_loss']:.4f}; "
          f"{speed['img_per_s']:.0f} img/s, {res.seconds:.0f} s, {res.params / 1e6:.2f}M params")
    return 0


def traceback_path(state: Path, rank: int | str) -> Path:
    """Where a worker of a multi-process run leaves the traceback of its failure (beside the state, on its node)."""
    return state.parent / f"{state.stem}.rank{rank}.traceback"


def launch_workers(P, state: Path, argv: list[str]) -> int:
    """This node's workers of a multi-process run; one line and the workers' status when one of them fails."""
    role = "join" if os.environ.get(ROLE) == "join" else "lead"
    # a worker's crash: its traceback to a file beside the state, the run's one line from here
    os.environ[WORKER_TRACEBACK] = str(traceback_path(state, "{rank}"))
    res = launch(P.train.processes, ["-m", "ddpmlab.pipeline.stages.train"], argv, nodes=P.train.nodes,
                 rendezvous=P.train.rendezvous, role=role)
    if res.status:
        tb = traceback_path(state, res.failed_rank)
        why = f" (its traceback: {tb})" if tb.is_file() else ""
        kept = f"the last checkpoint {state} is kept" if state.is_file() else f"no checkpoint was written yet ({state})"
        print(f"train: the {P.train.nodes * P.train.processes}-process run stopped: {res.failed}{why}; a process or a node "
              f"failed or was lost; {kept}: rerun to resume", file=sys.stderr)
    return res.status


@command("train")
def main(argv=None):
    ap = stage_parser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--state", required=True, type=Path, help="resumable training state (kept between runs)")
    ap.add_argument("--model", required=True, type=Path, help="final model: EMA weights + config")
    ap.add_argument("--live", required=True, type=Path, help="dvclive folder (metrics.json, plots/, speed.json)")
    args = ap.parse_args(argv)
    adopt_slurm_env()
    status = run_stage(args.params, args.train, args.val, args.state, args.model, args.live,
                       argv if argv is not None else sys.argv[1:])
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
