"""What the research benchmarks share: one evaluation protocol, one se_robot training run, one SB3 run.

Every learner in a benchmark table is scored the same way as the training loop scores its own agent
(``se_robot.train.Trainer.evaluate``): greedy episodes from the start states ``seed + EVAL_SEED_OFFSET
+ i``, success when ``info["is_success"]`` was true at any step of the episode. A row of an eval curve
is ``{"step": int, "success": float, "return": float}``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

EvalRow = dict[str, float]


def evaluate_policy(policy: Callable[[Any], Any], env: Any, episodes: int, seed: int) -> tuple[float, float]:
    """Mean success and mean return of ``policy`` over ``episodes`` greedy episodes (the loop's seeds)."""
    import numpy as np

    from se_robot.train import EVAL_SEED_OFFSET

    successes, returns = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET + i)
        done, success, total = False, False, 0.0
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            success |= bool(info.get("is_success", False))
            done = terminated or truncated
        successes.append(float(success))
        returns.append(total)
    return float(np.mean(successes)), float(np.mean(returns))


def run_trainer(cfg: Any, run_dir: Path) -> tuple[list[EvalRow], float]:
    """Train a se_robot agent with the shared loop; its eval curve (read back from eval.csv) and wall s."""
    from se_robot.logger import Logger
    from se_robot.train import build_trainer

    start = time.perf_counter()
    trainer = build_trainer(cfg, run_dir)
    try:
        trainer.train()
    finally:
        trainer.logger.close()
    rows = [{"step": int(float(r["step"])), "success": float(r["eval/success"]), "return": float(r["eval/return"])}
            for r in Logger.read(run_dir / "eval.csv")]
    return rows, time.perf_counter() - start


def run_sb3_sac(task: str, seed: int, steps: int, eval_every: int, eval_episodes: int, *,
                stop_at_success: float = 0.0, save_to: Path | None = None,
                **env_options: Any) -> tuple[list[EvalRow], float]:
    """Stable-Baselines3 SAC with its default settings on a sim task from the state vector.

    Evaluated before learning, every ``eval_every`` env steps and once more at ``steps`` when that
    is not on the grid; ``stop_at_success`` > 0 ends the run at the first evaluation reaching it.
    ``env_options`` go to ``make_env`` (``action_repeat``, ``reward_type``, ...) for both the
    training and the evaluation env. Returns the eval curve and the wall-clock seconds.
    """
    try:
        from stable_baselines3 import SAC
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError as e:
        raise SystemExit("the Stable-Baselines3 baseline needs `pip install stable-baselines3` "
                         "(or `pip install -e '.[bench]'`)") from e
    from se_robot.envs import make_env
    from se_robot.envs.wrappers import FlattenObs

    # SB3's MlpPolicy takes a Box: the same vector se_robot's learners see (features, state, task)
    env = FlattenObs(make_env(task, obs_mode="state", **env_options))
    eval_env = FlattenObs(make_env(task, obs_mode="state", **env_options))
    model = SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    rows: list[EvalRow] = []

    def evaluate(step: int) -> bool:
        """Record one evaluation; True when the run may go on."""
        success, ret = evaluate_policy(lambda o: model.predict(o, deterministic=True)[0], eval_env,
                                       eval_episodes, seed)
        rows.append({"step": step, "success": success, "return": ret})
        return not (stop_at_success and success >= stop_at_success)

    class EvalEvery(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                return evaluate(self.num_timesteps)
            return True

    start = time.perf_counter()
    if evaluate(0):
        model.learn(total_timesteps=steps, callback=EvalEvery())
        solved = stop_at_success and rows[-1]["success"] >= stop_at_success
        if rows[-1]["step"] != steps and not solved:
            evaluate(steps)
    wall = time.perf_counter() - start
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
        model.save(save_to / "sb3_sac.zip")
    env.close()
    eval_env.close()
    return rows, wall


def steps_to(rows: list[EvalRow], level: float) -> int | None:
    """The first evaluated step whose success reached ``level`` (None: never within the run)."""
    return next((int(r["step"]) for r in rows if r["success"] >= level), None)


def run_jobs(keys: list[tuple], one_run: Callable[..., dict], args: Any, record: Callable[[dict], None],
             jobs: int) -> None:
    """``one_run(*key, args)`` for every key, ``record``-ed as each finishes: in this process when
    ``jobs`` is 1, else in ``jobs`` spawned processes (each run starts from a clean interpreter, as
    a fresh ``--jobs 1`` run does; ``args`` must then pickle, so its ``func`` is dropped)."""
    import argparse
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    if jobs == 1:
        for key in keys:
            record(one_run(*key, args))
        return
    job_args = argparse.Namespace(**(vars(args) | {"func": None}))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(one_run, *key, job_args) for key in keys]
        try:
            for future in as_completed(futures):
                record(future.result())
        except BaseException:   # a failed run or Ctrl-C: do not start the queued ones
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def plot_success_panels(tasks: list[str], draw: Callable[[Any, str], None], title: Callable[[str], str],
                        path: Path, threshold: float, width: float = 5.5) -> None:
    """A PNG with one panel per task of eval success against env steps: ``draw(ax, task)`` draws the
    task's curves (with labels), and every panel gets the ``threshold`` line, ``title(task)`` and axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(width * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        draw(ax, task)
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8)
        ax.set_title(title(task))
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_line(result: dict, name: str, threshold: float) -> str:
    """The progress line of one finished run: ``[task name seed N] steps to 90%: ...; final; wall``."""
    hit = result["steps_to_threshold"]
    return (f"[{result['task']} {name} seed {result['seed']}] steps to {threshold:.0%}: "
            f"{hit if hit is not None else 'not reached'}; final success {result['curve'][-1][1]:.2f}; "
            f"{result['wall_s']:.0f} s")
