"""Stage `train`: Ho et al. Algorithm 1 with EMA; logs train/validation loss with dvclive; resumes from its state file.

Resumes only the same experiment (params, data and code: training.state); another experiment's
state is parked beside --state, not overwritten. With train.processes > 1 it relaunches itself under
torchrun: one process per GPU (NCCL), or processes on the CPU (gloo); train.batch_size stays global.
"""

import argparse
import sys
from pathlib import Path

from ddpmlab.device import DeviceError
from ddpmlab.errors import DataError
from ddpmlab.schema import ParamsError
from ddpmlab.training.loop import TrainingDiverged
from ddpmlab.training.run import run_stage


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", required=True, type=Path, help="prepared train.npz")
    ap.add_argument("--val", required=True, type=Path, help="prepared val.npz")
    ap.add_argument("--state", required=True, type=Path, help="resumable training state (kept between runs)")
    ap.add_argument("--model", required=True, type=Path, help="final model: EMA weights + config")
    ap.add_argument("--live", required=True, type=Path, help="dvclive folder (metrics.json, plots/, speed.json, loss.png)")
    args = ap.parse_args(argv)
    try:
        status = run_stage(args.params, args.train, args.val, args.state, args.model, args.live, Path(__file__),
                           argv if argv is not None else sys.argv[1:])
    except (ParamsError, DataError, DeviceError, TrainingDiverged) as e:
        sys.exit(f"train: {e}")
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
