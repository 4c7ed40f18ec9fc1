"""What defines a training run, as plain frozen dataclasses: the train config and the whole setup.

Kept apart from the training loop (core.training) so that what only reads a checkpoint's description
(the sample, residual and evaluation stages, through the pipeline's config mappers) does not import the loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ddpmlab.core.schedule import Schedule, ScheduleConfig
from ddpmlab.core.unet import UNetConfig

# TrainConfig fields that change how a run is executed or recorded, not the weights it ends with
BOOKKEEPING = ("device", "checkpoint_every", "val_every", "processes", "nodes", "rendezvous")


@dataclass(frozen=True)
class TrainConfig:
    """How a network is trained. The pipeline builds it from its validated `train` params, which have the
    same fields in the same order (a test checks), with their allowed values and defaults."""

    device: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    adam_beta2: float
    warmup_steps: int
    lr_decay: str
    grad_clip: float
    ema_decay: float
    ema_warmup: float
    prediction: str
    min_snr_gamma: float
    t_sampling: str
    guide_fraction: float
    hflip: bool
    val_every: int
    val_draws: int
    checkpoint_every: int
    bf16: bool
    compile: bool
    processes: int
    nodes: int = 1  # machines of a multi-node run, each with `processes` processes
    rendezvous: str = ""  # host:port of its c10d rendezvous (nodes > 1)


@dataclass(frozen=True)
class TrainSetup:
    """Everything that defines a training run: network shape, schedule, train config, seed."""

    model: UNetConfig
    schedule: ScheduleConfig
    train: TrainConfig
    seed: int

    def build_schedule(self) -> Schedule:
        return self.schedule.build()

    def experiment(self) -> dict:
        """The params that make the experiment (bookkeeping removed): part of the resume key."""
        train = {k: v for k, v in asdict(self.train).items() if k not in BOOKKEEPING}
        return {"model": self.model.to_dict(), "schedule": self.schedule.to_dict(), "train": train, "seed": self.seed}

    def train_config(self) -> dict:
        """What checkpoints record about how the weights were made (the config without bookkeeping, and the
        seed): a changed checkpoint_every reruns train but leaves model.pt byte-identical."""
        return {**self.experiment()["train"], "seed": self.seed}
