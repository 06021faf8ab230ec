"""``python -m benchmarks model-error``: where MBPO's learned dynamics go wrong on contact.

MBPO pays on reach and not on push (docs/benchmarks.md, "SimPush-v0"). This benchmark measures
why, on the same model MBPO fits (the ``agent.model`` section of the MBPO recipe, overridable):

- it collects state-vector transitions on the task, each episode acted either by the scripted
  expert with Gaussian action noise (the kind of data demos and a learning policy give) or
  uniformly at random (what MBPO's first model sees), and splits them by episode into a training
  and a test set;
- it counts the *contact* transitions, those where the cube moved more than ``--contact-mm``, in
  each kind of data: the model can only learn the cube's motion from those;
- it fits the ensemble on the training set and prints, on the test set, the elite mean's one-step
  error in the cube's and the gripper's position, for contact and free transitions, next to the
  error of predicting that the cube stays where it is;
- it rolls the model open-loop through the recorded actions from test states, as MBPO's branched
  rollouts do, and prints the cube's position error after 1, 3, 5 and 10 steps, from starts in
  contact and from free starts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("model-error", help="MBPO's model error on contact vs free transitions (push, lift)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="push", help="sim task with a cube (push, lift)")
    p.add_argument("--episodes", type=int, default=80, help="episodes collected (train and test together)")
    p.add_argument("--expert-share", type=float, default=0.5, help="share of episodes acted by the noisy expert")
    p.add_argument("--noise", type=float, default=0.3, help="std of the Gaussian noise on the expert's actions")
    p.add_argument("--test-share", type=float, default=0.25, help="share of episodes held out for the errors")
    p.add_argument("--contact-mm", type=float, default=1.0, help="cube displacement that makes a step a contact step")
    p.add_argument("--horizons", default="1,3,5,10", help="open-loop rollout lengths")
    p.add_argument("--recipe", default="reach_mbpo_quick", help="MBPO recipe whose agent.model is fitted")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model overrides, e.g. ensemble_size=10 hidden_dim=256 max_grad_steps=3000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.set_defaults(func=run)


def collect(task: str, episodes: int, expert_share: float, noise: float, seed: int) -> dict[str, np.ndarray]:
    """Transitions of ``episodes`` episodes: vector states, actions, next states, the cube before and
    after, the episode index and whether the expert acted."""
    from se_robot.agents.obs import vector_obs
    from se_robot.envs import make_env
    from se_robot.envs.experts import expert_for

    env = make_env(task, obs_mode="state")
    expert, rng = expert_for(env), np.random.default_rng(seed)
    env.action_space.seed(seed)
    rows: dict[str, list] = {k: [] for k in ("state", "action", "next_state", "cube", "next_cube", "episode", "expert")}
    base = env.unwrapped
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed * 100_000 + ep)
            expert.reset()
            by_expert = bool(rng.random() < expert_share)
            done = False
            while not done:
                if by_expert:
                    action = np.clip(expert(obs) + rng.normal(0.0, noise, env.action_space.shape), -1.0, 1.0)
                else:
                    action = env.action_space.sample()
                cube = base.object_state().cube_pos.copy()
                next_obs, _, terminated, truncated, _ = env.step(action.astype(np.float32))
                for key, value in (("state", vector_obs(obs)), ("action", action), ("next_state", vector_obs(next_obs)),
                                   ("cube", cube), ("next_cube", base.object_state().cube_pos.copy()),
                                   ("episode", ep), ("expert", by_expert)):
                    rows[key].append(value)
                obs, done = next_obs, terminated or truncated
    finally:
        env.close()
    return {k: np.asarray(v, np.float32 if k not in ("episode", "expert") else None) for k, v in rows.items()}


def columns(task: str) -> tuple[slice, slice]:
    """Where the gripper's and the cube's xyz sit in obs_mode state's vector: proprioception (whose
    last three values are the gripper's position), then the task's features."""
    from se_robot.arm import load_arm
    from se_robot.envs.spaces import proprio_dim
    from se_robot.tasks import load_task

    p = proprio_dim(load_arm("so101"))
    names = list(load_task(task).feature_names)
    if "cube_x" not in names:
        raise SystemExit(f"benchmarks model-error: task {task!r} has no cube (its features: {', '.join(names)})")
    start = p + names.index("cube_x")
    return slice(p - 3, p), slice(start, start + 3)


def elite_mean(model, state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The next state the elites predict on average (raw units)."""
    import torch

    mean, _ = model.predict(torch.as_tensor(state), torch.as_tensor(action))
    delta = mean[model.elites].mean(0)[:, :-1].numpy()
    return state + delta


def rollout_errors(model, data: dict[str, np.ndarray], test: np.ndarray, horizons: list[int], cube: slice,
                   contact: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """Cube position error (m) after h open-loop model steps through the recorded actions, from every
    test state with h steps left in its episode; keyed by (start kind, h)."""
    out: dict[tuple[str, int], list] = {}
    ep = data["episode"]
    for h in horizons:
        starts = np.array([i for i in np.flatnonzero(test) if i + h - 1 < len(ep) and ep[i + h - 1] == ep[i]])
        if len(starts) == 0:
            continue
        state = data["state"][starts].copy()
        for k in range(h):
            state = elite_mean(model, state, data["action"][starts + k])
        err = np.linalg.norm(state[:, cube] - data["next_state"][starts + h - 1][:, cube], axis=1)
        for kind, mask in (("contact", contact[starts]), ("free", ~contact[starts])):
            out.setdefault((kind, h), []).append(err[mask])
    return {key: np.concatenate(v) for key, v in out.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    from se_robot.agents.dynamics import DynamicsConfig, EnsembleTrainer, ProbabilisticEnsemble
    from se_robot.config import from_dict, merge, parse_set
    from se_robot.train_config import read_recipe

    torch.set_num_threads(args.threads)
    horizons = [int(h) for h in args.horizons.split(",") if h.strip()]
    model_cfg = from_dict(DynamicsConfig, merge(read_recipe(args.recipe).get("agent", {}).get("model", {}),
                                            parse_set(args.set, "--set")), "benchmarks model-error --set")
    t0 = time.perf_counter()
    data = collect(args.task, args.episodes, args.expert_share, args.noise, args.seed)
    collect_s = time.perf_counter() - t0
    ee, cube = columns(args.task)
    moved = np.linalg.norm(data["next_cube"] - data["cube"], axis=1)
    contact = moved > args.contact_mm / 1000.0
    rng = np.random.default_rng(args.seed)
    test_eps = rng.permutation(args.episodes)[: max(1, int(round(args.episodes * args.test_share)))]
    test = np.isin(data["episode"], test_eps)
    train = ~test

    model = ProbabilisticEnsemble(data["state"].shape[1], data["action"].shape[1], model_cfg)
    trainer = EnsembleTrainer(model, torch.device("cpu"))
    t0 = time.perf_counter()
    reward = np.zeros(int(train.sum()), np.float32)   # the reward column is not under test here
    fit = trainer.fit(data["state"][train], data["action"][train], reward, data["next_state"][train], rng)
    fit_s = time.perf_counter() - t0

    pred = elite_mean(model, data["state"][test], data["action"][test])
    cube_err = np.linalg.norm(pred[:, cube] - data["next_state"][test][:, cube], axis=1)
    stay_err = np.linalg.norm(data["state"][test][:, cube] - data["next_state"][test][:, cube], axis=1)
    ee_err = np.linalg.norm(pred[:, ee] - data["next_state"][test][:, ee], axis=1)
    rolls = rollout_errors(model, data, test, horizons, cube, contact)

    expert = data["expert"].astype(bool)
    expert_eps = len(np.unique(data["episode"][expert]))
    print(f"task {args.task}: {len(moved)} transitions in {args.episodes} episodes ({collect_s:.0f} s); "
          f"{expert_eps} episodes ({expert.mean():.0%} of steps) by the expert with action noise std {args.noise}, "
          "the rest uniform random (the expert's episodes end at success)")
    print(f"contact steps (cube moved > {args.contact_mm:g} mm): {contact.mean():.1%} of all, "
          f"{contact[expert].mean() if expert.any() else float('nan'):.1%} of the expert's, "
          f"{contact[~expert].mean() if (~expert).any() else float('nan'):.1%} of the random policy's")
    print(f"model: {model_cfg.ensemble_size} members ({model_cfg.num_elites} elites), {model_cfg.num_layers}x"
          f"{model_cfg.hidden_dim}, fitted on {int(train.sum())} transitions in {fit_s:.0f} s "
          f"({fit['model/grad_steps']:.0f} gradient steps); test: {int(test.sum())} transitions "
          f"of {len(test_eps)} held-out episodes")
    c = contact[test]
    print(f"{'one-step error, median (p90), mm':<44} {'free steps':>18} {'contact steps':>18}")
    for name, err in (("cube position, model", cube_err), ("cube position, 'the cube stays put'", stay_err),
                      ("gripper position, model", ee_err)):
        cells = [_cell(err[m]) for m in (~c, c)]
        print(f"{name:<44} {cells[0]:>18} {cells[1]:>18}")
    print(f"{'open-loop rollout: cube error, median (p90), mm':<44} {'from free starts':>18} {'from contact':>18}")
    for h in horizons:
        cells = [_cell(rolls.get((kind, h), np.empty(0))) for kind in ("free", "contact")]
        print(f"{f'after {h} step' + ('s' if h > 1 else ''):<44} {cells[0]:>18} {cells[1]:>18}")
    return 0


def _cell(err_m: np.ndarray) -> str:
    if len(err_m) == 0:
        return "-"
    return f"{1000 * np.median(err_m):.2f} ({1000 * np.percentile(err_m, 90):.2f}) n={len(err_m)}"
