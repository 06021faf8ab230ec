"""``python -m benchmarks learner``: DrQ-v2 gradient updates per second on synthetic batches.

One update is what DrQ-v2 does per update round: augment and encode both observations, one critic
step (encoder included), one actor step, one target update. Batches are random arrays made up
front, so the figure is the learner alone (no env, no replay sampling). Rows, side by side:

- ``paper``: 84x84, frame stack 3, batch 256, hidden 1024 (the published configuration);
- ``cpu``: 64x64, frame stack 3, batch 128 (``--cpu-image``/``--cpu-batch`` change it);
- ``frozen``: the paper's batch with a frozen encoder whose per-frame features come from the
  replay cache (so an update is MLPs only); once with the DrQ-v2 conv's own 3 x 39200 features,
  once with 512 per frame (the size of a pretrained ResNet-18's pooled output);
- ``paper`` also with channels-last and/or bf16 autocast, and ``+fast`` (both, plus the integer
  gather random shift); ``cpu`` plain, with both, and ``+fast``.

Wall-clock figures on a shared machine move with its load; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("learner", help="DrQ-v2 gradient updates/s (paper, CPU-sized, frozen encoder)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=9.0, help="time to spend measuring each row, over all rounds")
    p.add_argument("--min-updates", type=int, default=3, help="measure at least this many updates per row")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measuring rounds over all rows")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--cpu-image", type=int, default=64, help="image size of the CPU-sized rows")
    p.add_argument("--cpu-batch", type=int, default=128, help="batch size of the CPU-sized rows")
    p.add_argument("--frozen-batch", type=int, default=256, help="batch size of the frozen-encoder rows")
    p.add_argument("--hidden-dim", type=int, default=1024, help="actor/critic hidden units (the paper's 1024)")
    p.add_argument("--rows", default="all",
                   help="comma list of rows to run (paper, paper+cl, paper+bf16, paper+cl+bf16, paper+fast, cpu, "
                        "cpu+cl+bf16, cpu+fast, frozen, frozen512) or 'all'")
    p.set_defaults(func=run)


VARIANTS = {  # suffix -> (channels_last, amp, aug_method)
    "": (False, "none", "grid_sample"),
    "+cl": (True, "none", "grid_sample"),
    "+bf16": (False, "bf16", "grid_sample"),
    "+cl+bf16": (True, "bf16", "grid_sample"),
    "+fast": (True, "bf16", "gather"),
}


def _rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name, image, batch, suffixes in (("paper", 84, 256, VARIANTS),
                                         ("cpu", args.cpu_image, args.cpu_batch, ("", "+cl+bf16", "+fast"))):
        for suffix in suffixes:
            cl, amp, aug = VARIANTS[suffix]
            rows.append({"name": name + suffix, "image": image, "batch": batch, "channels_last": cl, "amp": amp,
                         "aug_method": aug})
    rows.append({"name": "frozen", "image": 84, "batch": args.frozen_batch, "frozen": "drqv2"})
    rows.append({"name": "frozen512", "image": 84, "batch": args.frozen_batch, "frozen": 512})
    if args.rows != "all":
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        known = {r["name"] for r in rows}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise SystemExit(f"benchmarks learner: unknown rows {unknown}; known: {sorted(known)}")
        rows = [r for r in rows if r["name"] in wanted]
    return rows


def _synthetic_batches(rng, count: int, batch: int, obs: dict, action_dim: int):
    import numpy as np

    from se_robot.agents.replay import Batch

    def make_obs():
        out = {}
        for key, shape in obs.items():
            if key == "pixels":
                out[key] = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
            else:
                out[key] = rng.standard_normal((batch, *shape)).astype(np.float32)
        return out

    return [Batch(obs=make_obs(), action=rng.uniform(-1, 1, (batch, action_dim)).astype(np.float32),
                  reward=rng.standard_normal(batch).astype(np.float32),
                  discount=np.full(batch, 0.99 ** 3, np.float32), next_obs=make_obs(),
                  weights=np.ones(batch, np.float32), indices=np.arange(batch), is_demo=np.zeros(batch, bool))
            for _ in range(count)]


class _SyntheticReplay:
    """Hands out the prepared batches in turn: what ``agent.update`` needs from a replay buffer."""

    def __init__(self, batches: list) -> None:
        self.batches = batches
        self.drawn = 0

    def sample(self, batch_size: int):
        batch = self.batches[self.drawn % len(self.batches)]
        self.drawn += 1
        return batch


def _run_for(agent, replay: _SyntheticReplay, seconds: float, min_updates: int) -> tuple[int, float, float]:
    """Updates done, wall seconds and process CPU seconds spent on them."""
    step, done = 10_000, 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while done < min_updates or time.perf_counter() - wall0 < seconds:
        agent.update(replay, None, step)
        done += 1
    if agent.device.type == "cuda":
        import torch
        torch.cuda.synchronize()
    return done, time.perf_counter() - wall0, time.process_time() - cpu0


def _build(row: dict, args: argparse.Namespace, device, tmp: str, rng, action_dim: int = 6, stack: int = 3):
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np

    from se_robot.agents.drqv2 import DrQV2Agent, DrQV2Config
    from se_robot.agents.encoders import build_encoder, save_encoder

    size = row["image"]
    pix = SimpleNamespace(shape=(3 * stack, size, size))
    space = SimpleNamespace(spaces={"pixels": pix})
    act = SimpleNamespace(shape=(action_dim,), low=-np.ones(action_dim), high=np.ones(action_dim))
    over = {"batch_size": row["batch"], "hidden_dim": args.hidden_dim, "utd": 1, "update_every_steps": 1, "channels_last": row.get("channels_last", False),
            "amp": row.get("amp", "none"), "aug_method": row.get("aug_method", "grid_sample")}
    frozen = row.get("frozen")
    if frozen == 512:  # only its output size matters: features come from the cache
        path = Path(tmp) / "pool512.pt"
        enc_kwargs = {"in_channels": 3, "image_size": (size, size), "channels": (32, 512), "pool": True}
        save_encoder(build_encoder("resnet", **enc_kwargs), path, "resnet", **enc_kwargs)
        over.update(encoder="checkpoint", encoder_checkpoint=str(path))
    if frozen:
        over["freeze_encoder"] = True
    agent = DrQV2Agent.create(space, act, DrQV2Config(**over), device=device, seed=0)
    obs = {"features": (stack * agent.encoder.frame_dim,)} if frozen else {"pixels": pix.shape}
    replay = _SyntheticReplay(_synthetic_batches(rng, 2, row["batch"], obs, action_dim))
    desc = (f"frozen, cached {obs['features'][0]} features" if frozen else
            f"drqv2 conv{' channels_last' if row.get('channels_last') else ''}"
            f"{' bf16' if row.get('amp') == 'bf16' else ''}"
            f"{' gather-shift' if row.get('aug_method') == 'gather' else ''}")
    agent.update(replay, None, 10_000)  # warm-up: Adam state, allocator, oneDNN kernel choice
    return agent, replay, desc


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile

    import numpy as np
    import torch

    from se_robot.agents.base import pick_device

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    rng = np.random.default_rng(0)
    rows = _rows(args)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"load1={load_before:.1f}; {args.rounds} interleaved rounds, >={args.seconds:.0f}s and "
          f">={args.min_updates} updates per row in all; hidden {args.hidden_dim}, feature 50", flush=True)
    totals = {row["name"]: [0, 0.0, 0.0] for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        built = {row["name"]: _build(row, args, device, tmp, rng) for row in rows}
        per_round = args.seconds / args.rounds
        min_per_round = max(1, -(-args.min_updates // args.rounds))
        for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits every row alike
            for row in rows:
                agent, replay, _ = built[row["name"]]
                n, wall, cpu = _run_for(agent, replay, per_round, min_per_round)
                t = totals[row["name"]]
                t[0], t[1], t[2] = t[0] + n, t[1] + wall, t[2] + cpu
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{'row':<14} {'image':>5} {'batch':>5} {'updates/s':>10} {'ms/update':>10} "
          f"{'cpu-ms/upd':>10} {'n':>4}  encoder")
    for row in rows:
        n, wall, cpu = totals[row["name"]]
        print(f"{row['name']:<14} {row['image']:>5} {row['batch']:>5} {n / wall:>10.2f} {1000 * wall / n:>10.1f} "
              f"{1000 * cpu / n:>10.1f} {n:>4}  {built[row['name']][2]}")
    print(f"load1 after: {load_after:.1f}. cpu-ms/upd is process CPU time (all threads): on a shared machine it "
          "moves less with other people's load than wall-clock updates/s does.")
    return 0
