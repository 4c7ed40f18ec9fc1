"""`ddpmlab join`: this machine joins a multi-node training run that `dvc repro` leads on another.

It runs the train stage's command from dvc.yaml as a joining node. Every node needs the same commit and the
same prepared data (`dvc pull`, or `dvc repro prepare`); params.yaml's train.nodes and train.rendezvous
(host:port of the leading node) say where the nodes meet. Only the leading node writes the model, the
state and the metrics; a joining node writes nothing but, if one of its processes fails, its traceback.

    ddpmlab join --params params.yaml      # on each node but the one running `dvc repro`
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from ddpmlab.core.errors import UserError
from ddpmlab.core.runtime import ROLE
from ddpmlab.pipeline import dvcyaml
from ddpmlab.pipeline.command import command, stage_parser
from ddpmlab.pipeline.schema import load_params


@command("join")
def main(argv=None):
    ap = stage_parser(__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dvc-yaml", default="dvc.yaml", type=Path, help="the pipeline whose train stage to join (default: dvc.yaml)")
    args = ap.parse_args(argv)
    P = load_params(args.params)
    if P.train.nodes < 2:
        raise UserError(f"train.nodes is 1 in {args.params}: there is no multi-node run to join "
                        "(set train.nodes and train.rendezvous on every node, then `dvc repro` on one of them)")
    cmd = dvcyaml.load(args.dvc_yaml).get("stages", {}).get("train", {}).get("cmd")
    if not isinstance(cmd, str):
        raise UserError(f"{args.dvc_yaml} has no train stage command to join")
    cmd = " ".join(cmd.split()) + ("" if args.params == "params.yaml" else f" --params {args.params}")
    print(f"join: {P.train.processes} process(es) of this node join the {P.train.nodes}-node run at {P.train.rendezvous}")
    return subprocess.call(cmd, shell=True, env={**os.environ, ROLE: "join"})
