"""How training executes: device, precision, memory layout, data-parallel processes on one or several machines.

Nothing here changes the math of a step; it decides where and in which number format it runs.
On the CPU everything is fp32 and eager, so CPU results are bit-reproducible.

Several processes: torch's elastic launcher (what `torchrun` runs) with a c10d rendezvous, one node
(`localhost:0`) or several (a host:port every node reaches). The process that writes files is the first of
the node that leads the run (ROLE = "lead", set by `launch`), whatever global rank the rendezvous gave it;
under a launcher of the user's own (torchrun, SLURM's srun) no node leads and global rank 0 writes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import uuid
from dataclasses import dataclass

import torch

from ddpmlab.core.device import DeviceError, cuda_index, resolve_device
from ddpmlab.core.errors import UserError

ROLE = "DDPMLAB_TRAIN_ROLE"  # in a worker's environment: "lead" | "join" (launched by `launch`) | unset (another launcher)
_writer = 0  # the writing rank of this process's job, agreed in init_distributed


class LaunchError(UserError):
    """A multi-process run cannot start: the rendezvous is unreachable, or the nodes disagree on who leads."""


@dataclass(frozen=True)
class Dist:
    """This process's place in a torch.distributed job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    writer: int = 0  # the one rank that writes checkpoints, metrics and the model

    @property
    def main(self) -> bool:
        return self.rank == self.writer

    @classmethod
    def current(cls) -> "Dist":
        import torch.distributed as d

        return cls(d.get_rank(), d.get_world_size(), _writer) if d.is_available() and d.is_initialized() else cls()

    def broadcast(self, obj):
        """`obj` as the writer has it, on every rank (the writer's own object when not distributed)."""
        if self.world == 1:
            return obj
        import torch.distributed as d

        box = [obj]
        d.broadcast_object_list(box, src=self.writer)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as d

        out = [None] * self.world
        d.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as d

            d.barrier()


@dataclass
class Runtime:
    """How the math is executed on this device: precision, memory layout, compilation, sharding."""

    device: torch.device
    dist: Dist
    bf16: bool
    channels_last: bool

    @property
    def defer_checks(self) -> bool:
        """Checks that need a value on the host (a non-finite loss) wait for the epoch's one sync on CUDA."""
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def make_runtime(device: str, bf16: bool) -> Runtime:
    """The runtime for a device name and bf16 flag; DeviceError (one line) if the device is absent."""
    dist = Dist.current()
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", cuda_index(int(os.environ.get("LOCAL_RANK", 0))))
        torch.cuda.set_device(dev)
        # TF32 matmuls/convs: ~2x on Ampere+ for the fp32 parts (optimizer, norms); bf16 covers the rest
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick the fastest kernels
    cuda = dev.type == "cuda"
    # bf16 autocast and channels_last pay off on tensor cores; on the CPU everything stays fp32
    return Runtime(dev, dist, bf16=cuda and bf16, channels_last=cuda)


# ---------------------------------------------------------------------------------------------
# Several processes (torch's elastic launcher + DDP)


def under_torchrun() -> bool:
    """Whether this process is a worker of a launcher (torchrun, this module's `launch`, or srun mapped by
    adopt_slurm_env)."""
    return "LOCAL_RANK" in os.environ


def adopt_slurm_env() -> None:
    """Under SLURM's `srun` (one task per GPU or CPU process, no torchrun), take rank, world size and local rank
    from SLURM's variables; the rendezvous is MASTER_ADDR:MASTER_PORT, which the job script sets."""
    env = os.environ
    if "LOCAL_RANK" in env or int(env.get("SLURM_NTASKS", "1")) < 2 or "SLURM_PROCID" not in env:
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise LaunchError(f"running as task {env['SLURM_PROCID']} of {env['SLURM_NTASKS']} under srun but {' and '.join(missing)} "
                          "is not set: export MASTER_ADDR (the first host of the job) and MASTER_PORT (a free port) in the job script")
    env.update(RANK=env["SLURM_PROCID"], WORLD_SIZE=env["SLURM_NTASKS"], LOCAL_RANK=env.get("SLURM_LOCALID", "0"))


@dataclass(frozen=True)
class LaunchResult:
    status: int  # 0 when every local worker finished
    failed: str = ""  # one line: which local rank failed first and how ("" when none did)
    failed_rank: int = -1  # its global rank


def launch(processes: int, target: list[str], argv: list[str], nodes: int = 1, rendezvous: str = "", role: str = "lead",
           say=print) -> LaunchResult:
    """Run `python target argv` (target: a script, or ["-m", module]) as `processes` workers on this node of a
    `nodes`-node job: the same launcher as torchrun, in this process (so a failure is one line, not torchrun's
    report). nodes > 1: a c10d rendezvous at `rendezvous` (host:port), where every node waits for the others."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    quiet = logging.getLogger("torch.distributed.elastic")  # the agent's own notes; the workers say what matters
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    os.environ[ROLE] = role
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: N processes must not each spin every core
    endpoint, run_id = (rendezvous, "ddpmlab-train") if nodes > 1 else ("localhost:0", str(uuid.uuid4()))
    if nodes > 1:
        say(f"train: this node ({socket.gethostname()}, {role}s) waits at {rendezvous} for all {nodes} nodes of the run")
    config = LaunchConfig(min_nodes=nodes, max_nodes=nodes, nproc_per_node=processes, run_id=run_id, rdzv_backend="c10d",
                          rdzv_endpoint=endpoint, max_restarts=0, monitor_interval=0.2, start_method="spawn")
    try:
        elastic_launch(config, sys.executable)(*target, *argv)
    except ChildFailedError as e:
        rank, f = e.get_first_failure()
        how = f"was killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with status {f.exitcode}"
        return LaunchResult(f.exitcode if f.exitcode > 0 else 1, f"rank {rank} on {socket.gethostname()} {how}", rank)
    except SignalException:
        raise KeyboardInterrupt from None
    except (RendezvousError, torch.distributed.DistError) as e:
        where = f"the rendezvous at {rendezvous}" if nodes > 1 else "the local rendezvous"
        raise LaunchError(f"the {nodes * processes}-process run lost or never reached {where}: {str(e).splitlines()[0][:300]}"
                          " (is the address reachable from every node, its port free, and the node hosting it still up?)") from None
    return LaunchResult(0)


def die_with_launcher() -> None:
    """A worker ends when its launcher does (Linux): a launcher killed with its node takes its workers along,
    so the other nodes see the loss at once instead of training on with an orphan."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def init_distributed(device: str, processes: int) -> Dist:
    """Join the launched job: NCCL with one GPU per process, gloo on the CPU; agree on the writing rank.
    DeviceError if GPUs are missing, LaunchError if more than one node claims to lead."""
    global _writer
    import torch.distributed as d

    die_with_launcher()
    cuda = resolve_device(device).type == "cuda"
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    if cuda and torch.cuda.device_count() < local_procs:
        raise DeviceError(f"{local_procs} processes on this node asked for but only {torch.cuda.device_count()} GPUs are visible; "
                          "use at most one process per GPU")
    if not d.is_initialized():
        d.init_process_group("nccl" if cuda else "gloo")
    roles = Dist.current().gather((os.environ.get(ROLE, ""), int(os.environ.get("LOCAL_RANK", 0)), socket.gethostname()))
    leads = [r for r, (role, local, _) in enumerate(roles) if role == "lead" and local == 0]
    if len(leads) > 1:
        raise LaunchError(f"{len(leads)} nodes ({', '.join(roles[r][2] for r in leads)}) started this run as its leader: run the "
                          "stage (`dvc repro`) on one node and `ddpmlab join` on the others")
    if not leads and all(role == "join" for role, _, _ in roles):
        raise LaunchError("every node joined and none leads this run: run `dvc repro` on one node, `ddpmlab join` on the others")
    _writer = leads[0] if leads else 0
    return Dist.current()
