"""How training executes on this machine: device, precision, memory layout, data-parallel processes.

Nothing here changes the math of a step; it decides where and in which number format it runs.
On the CPU everything is fp32 and eager, so CPU results are bit-reproducible.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from ddpmlab.core.device import DeviceError, resolve_device


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
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        # TF32 matmuls/convs: ~2x on Ampere+ for the fp32 parts (optimizer, norms); bf16 covers the rest
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick the fastest kernels
    cuda = dev.type == "cuda"
    # bf16 autocast and channels_last pay off on tensor cores; on the CPU everything stays fp32
    return Runtime(dev, dist, bf16=cuda and bf16, channels_last=cuda)


# ---------------------------------------------------------------------------------------------
# Several processes (torchrun + DDP)


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def relaunch_under_torchrun(processes: int, target: list[str], argv: list[str]) -> int:
    """Run `target argv` (a script, or ["-m", module]) as `processes` torchrun workers on this machine; returns
    torchrun's exit status."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.call([*launcher, *target, *argv])


def init_distributed(device: str, processes: int) -> Dist:
    """Join the torchrun job: NCCL with one GPU per process, gloo on the CPU. DeviceError if GPUs are missing."""
    import torch.distributed as d

    cuda = resolve_device(device).type == "cuda"
    if cuda and torch.cuda.device_count() < processes:
        raise DeviceError(f"{processes} processes asked for but only {torch.cuda.device_count()} GPUs are visible; use at most one process per GPU")
    if not d.is_initialized():
        d.init_process_group("nccl" if cuda else "gloo")
    return Dist.current()
