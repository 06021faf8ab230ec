"""Gymnasium envs of other packages, seen the way se_robot's agents and replay see an ``ArmEnv``.

The learners, the replay and the loop take dict observations with the keys of
``se_robot.agents.obs`` and actions in [-1, 1]^n. :class:`ForeignEnv` maps an env's own
observation onto those keys by the rule below (declared, never guessed from sizes alone) and
rescales its bounded Box actions, so ``se-robot train --env-id ID`` trains SAC, MBPO and DrQ-v2 on
it with the same checkpoints, logging and evaluation as on the arm's tasks.

What the env's observation space becomes:

- a ``Box`` with one axis: ``state`` (float32);
- a ``Box`` of uint8 in [0, 255] shaped (H, W, 3), Gymnasium's image layout (what ``render()``
  and image envs give): ``pixels``;
- a ``Dict`` whose keys are already among ``pixels`` (an image as above), ``state`` and ``task``
  (one-axis Boxes): kept as it is. Anything else is refused with what to wrap it in.

``obs_mode`` says what the agent sees: ``state`` the env's vector; ``pixels`` the env's image, or
its ``render()`` frames (render_mode ``rgb_array``) where it has none; ``both`` the two together.
Pixels are resized to ``image_size`` x ``image_size`` (``make_env`` then stacks them
channel-first like the arm's camera frames).
"""

from __future__ import annotations

from typing import Any

import cv2
import gymnasium as gym
import numpy as np

PIXELS, STATE, TASK = "pixels", "state", "task"
OBS_MODES = ("state", "pixels", "both")


def _is_vector(space: Any) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 1


def _is_image(space: Any) -> bool:
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[2] == 3 and bool(np.all(space.low == 0)) and bool(np.all(space.high == 255)))


def observation_parts(space: gym.Space) -> dict[str, gym.spaces.Box]:
    """The env's observation space by se_robot key (module docstring's rule); refuses the rest."""
    if isinstance(space, gym.spaces.Box):
        if _is_vector(space):
            return {STATE: space}
        if _is_image(space):
            return {PIXELS: space}
        raise ValueError(f"observation Box of shape {space.shape} and dtype {space.dtype} is neither a state vector "
                         "(one axis) nor an image (uint8 in [0, 255], H x W x 3): wrap the env in "
                         "gymnasium.wrappers.FlattenObservation, or give it one of these layouts")
    if isinstance(space, gym.spaces.Dict):
        parts = {}
        for key, sub in space.spaces.items():
            if (key == PIXELS and _is_image(sub)) or (key in (STATE, TASK) and _is_vector(sub)):
                parts[key] = sub
            else:
                raise ValueError(f"observation key {key!r} ({sub}) is not understood: keys must be 'pixels' "
                                 "(uint8 H x W x 3 image), 'state' or 'task' (one-axis Boxes); rename or "
                                 "flatten them with a gymnasium ObservationWrapper")
        return parts
    raise TypeError(f"observation space {space} is not a Box or a Dict of Boxes")


def check_action_space(space: gym.Space) -> gym.spaces.Box:
    """A one-axis Box with finite bounds: the only actions the agents' tanh policies can cover."""
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"action space {space} is not a one-axis Box: se_robot's agents output continuous "
                         "vectors (discrete actions are not supported)")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ValueError(f"action space {space} is unbounded: the agents act in [-1, 1]^n, rescaled onto "
                         "finite bounds (clip it with gymnasium.wrappers.ClipAction and a bounded space)")
    return space


class ForeignEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Dict observations with se_robot's keys and actions in [-1, 1]^n over any Gymnasium env.

    ``env`` is the env as ``gym.make`` gives it (with ``render_mode="rgb_array"`` where pixels
    come from ``render()``). An agent's action ``a`` becomes ``low + (a + 1) (high - low) / 2``,
    clipped to the env's bounds. Its constructor arguments are recorded, so ``env.spec`` can
    rebuild it (Gymnasium's env checker does).
    """

    def __init__(self, env: gym.Env, obs_mode: str = "state", image_size: int = 84):
        gym.utils.RecordConstructorArgs.__init__(self, obs_mode=obs_mode, image_size=image_size)
        gym.Wrapper.__init__(self, env)
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {', '.join(OBS_MODES)}, got {obs_mode!r}")
        parts = observation_parts(env.observation_space)
        self._single = next(iter(parts))   # the key of a Box observation (a Dict keeps its own keys)
        box = check_action_space(env.action_space)
        self._low, self._high = box.low.astype(np.float64), box.high.astype(np.float64)
        self.obs_mode, self.image_size = obs_mode, int(image_size)
        self.keys = tuple(k for k in (STATE, TASK) if k in parts) if obs_mode != "pixels" else ()
        if obs_mode != "pixels" and not self.keys:
            raise ValueError(f"obs_mode {obs_mode} needs a state vector; this env observes only an image "
                             "(use obs_mode pixels)")
        self.rendered = obs_mode != "state" and PIXELS not in parts
        if self.rendered and env.render_mode != "rgb_array":
            raise ValueError(f"obs_mode {obs_mode} on an env without image observations takes its render() "
                             f"frames: make it with render_mode='rgb_array' (it has {env.render_mode!r})")
        spaces: dict[str, gym.Space] = {}
        if obs_mode != "state":
            spaces[PIXELS] = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        for key in self.keys:
            spaces[key] = gym.spaces.Box(parts[key].low.astype(np.float32), parts[key].high.astype(np.float32),
                                         parts[key].shape, np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, box.shape, np.float32)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """The env's action for an agent action in [-1, 1]^n."""
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        out = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        return np.clip(out, self._low, self._high).astype(self.env.action_space.dtype)

    def _observe(self, raw: Any) -> dict[str, np.ndarray]:
        raw = raw if isinstance(raw, dict) else {self._single: raw}
        obs = {key: np.asarray(raw[key], np.float32) for key in self.keys}
        if self.obs_mode != "state":
            frame = self.env.render() if self.rendered else raw[PIXELS]
            if frame is None:
                raise RuntimeError("render() returned no frame: the env must be made with render_mode='rgb_array'")
            obs[PIXELS] = self._resize(np.asarray(frame, np.uint8))
        return obs

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[:2] == (self.image_size, self.image_size):
            return np.ascontiguousarray(frame[..., :3])
        return cv2.resize(np.ascontiguousarray(frame[..., :3]), (self.image_size, self.image_size),
                          interpolation=cv2.INTER_AREA)

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict]:
        raw, info = self.env.reset(**kwargs)
        return self._observe(raw), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        raw, reward, terminated, truncated, info = self.env.step(self.env_action(action))
        return self._observe(raw), float(reward), bool(terminated), bool(truncated), info


def make_foreign_env(env_id: str, obs_mode: str = "state", image_size: int = 84, render_mode: str | None = None,
                     **kwargs: Any) -> ForeignEnv:
    """``gym.make(env_id, **kwargs)`` seen through :class:`ForeignEnv`.

    ``env_id`` may name the module that registers it (``"my_pkg:MyEnv-v0"``, Gymnasium's syntax).
    Pixels and ``render_mode="rgb_array"`` (frames to film for evaluation videos) make the env
    with that render mode; an env that cannot render is made without it, and then only refused
    where its pixels would be rendered ones.
    """
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {', '.join(OBS_MODES)}, got {obs_mode!r}")
    if obs_mode != "state" or render_mode == "rgb_array":
        env = gym.make(env_id, render_mode="rgb_array", **kwargs)
        if "rgb_array" not in env.metadata.get("render_modes", ()):
            env.close()
            env = gym.make(env_id, **kwargs)
    else:
        env = gym.make(env_id, render_mode=render_mode, **kwargs) if render_mode else gym.make(env_id, **kwargs)
    return ForeignEnv(env, obs_mode, image_size)
