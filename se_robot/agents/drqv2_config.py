"""DrQ-v2's configuration and its exploration-noise schedule.

Defaults are the paper's (Yarats et al. 2021, "Mastering Visual Continuous Control: Improved
Data-Augmented Reinforcement Learning", table 1). The demo knobs (symmetric sampling, critic
LayerNorm, REDQ ensemble, UTD, BC) default to "off" or to the value that changes nothing, so the
defaults train exactly the published agent; ``config/agents/drqv2.yaml`` spells the same values out.

The discount and n-step horizon are not here: the replay buffer assembles n-step targets and
returns ``discount = gamma^n`` (0 after termination), so they live in ``ReplayConfig``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from se_robot.config import config_path, load, option


@dataclass(frozen=True)
class DrQV2Config:
    # --- the paper's agent
    encoder: str = option("drqv2", choices=("drqv2", "resnet", "checkpoint"),
                          help="pixel encoder: the paper's 4-layer conv net, a small ResNet, or a checkpoint file")
    encoder_checkpoint: str = option("", help="torch.save file for encoder=checkpoint (format: se_robot.agents.encoders)")
    trust_pickle: bool = option(False, help="allow encoder_checkpoint to be a whole pickled module (runs code from the file)")
    freeze_encoder: bool = option(False, help="no encoder gradients; replay caches each frame's features once")
    feature_dim: int = option(50, range=(1, None), help="trunk output size (Linear -> LayerNorm -> Tanh)")
    hidden_dim: int = option(1024, range=(1, None), help="hidden units of the actor and critic MLPs")
    lr: float = option(1e-4, range=(0.0, 1.0), help="Adam learning rate of encoder, actor and critic")
    batch_size: int = option(256, range=(1, None), help="transitions per gradient step")
    critic_target_tau: float = option(0.01, range=(0.0, 1.0), help="Polyak rate of the target critic")
    update_every_steps: int = option(2, range=(1, None), help="env steps between update rounds")
    num_expl_steps: int = option(2000, range=(0, None), help="steps of uniform random actions at the start")
    stddev_schedule: str = option("linear(1.0,0.1,500000)",
                                  help="exploration std: a number, linear(init,final,steps) or step_linear(i,m,s1,f,s2)")
    stddev_clip: float = option(0.3, range=(0.0, None), help="clip of the target/actor-loss action noise")
    aug_pad: int = option(4, range=(0, 32), help="random-shift padding in pixels (0: no augmentation)")
    # --- learning from demonstrations and sample efficiency (each independent)
    demo_fraction: float = option(0.5, range=(0.0, 1.0),
                                  help="share of each batch drawn from the demo buffer when one is given (RLPD/SERL)")
    critic_layer_norm: bool = option(False, help="LayerNorm after each hidden layer of the critic (RLPD)")
    num_critics: int = option(2, range=(1, 32), help="critic ensemble size N")
    num_target_critics: int = option(2, range=(1, 32), help="random subset M of the ensemble for the target min (REDQ)")
    utd: int = option(1, range=(1, 64), help="critic gradient steps per update round (update-to-data ratio)")
    bc_weight: float = option(0.0, range=(0.0, None), help="weight of MSE(actor mean, demo action) on demo rows")
    # --- where and how fast
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps")
    num_threads: int = option(0, range=(0, 256), help="torch CPU threads (0: leave torch's default)")
    channels_last: bool = option(False, help="channels-last memory format for the conv encoder")
    amp: str = option("none", choices=("none", "bf16"), help="autocast mixed precision for forward passes")

    def __post_init__(self) -> None:
        if self.num_target_critics > self.num_critics:
            raise ValueError(f"num_target_critics ({self.num_target_critics}) must be <= num_critics ({self.num_critics})")
        if self.encoder == "checkpoint" and not self.encoder_checkpoint:
            raise ValueError("encoder=checkpoint needs encoder_checkpoint (a path)")
        parse_schedule(self.stddev_schedule)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> "DrQV2Config":
        """From ``path`` (default: the packaged config/agents/drqv2.yaml), validated."""
        return load(cls, path or config_path("agents", "drqv2.yaml"), overrides)


_NUM = r"\s*([-+0-9.eE]+)\s*"


def parse_schedule(spec: str | float) -> Callable[[int], float]:
    """``"0.2"``, ``"linear(init,final,duration)"`` or ``"step_linear(init,mid,d1,final,d2)"`` -> f(step)."""
    try:
        value = float(spec)
        return lambda step: value
    except ValueError:
        pass
    m = re.fullmatch(rf"linear\({_NUM},{_NUM},{_NUM}\)", str(spec).strip())
    if m:
        init, final, duration = map(float, m.groups())
        return lambda step: init + (final - init) * min(max(step / duration, 0.0), 1.0)
    m = re.fullmatch(rf"step_linear\({_NUM},{_NUM},{_NUM},{_NUM},{_NUM}\)", str(spec).strip())
    if m:
        init, mid, d1, final, d2 = map(float, m.groups())

        def step_linear(step: int) -> float:
            if step <= d1:
                return init + (mid - init) * min(max(step / d1, 0.0), 1.0)
            return mid + (final - mid) * min((step - d1) / d2, 1.0)
        return step_linear
    raise ValueError(f"stddev_schedule {spec!r}: expected a number, linear(init,final,steps) "
                     "or step_linear(init,mid,steps1,final,steps2)")
