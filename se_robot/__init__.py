"""se_robot: sample-efficient reinforcement learning for real robot arms, with a MuJoCo twin."""

__version__ = "0.1.0"
