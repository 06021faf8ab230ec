"""``python -m benchmarks learner``: DrQ-v2 gradient updates per second on synthetic batches.

One update is what DrQ-v2 does per update round: augment and encode both observations, one critic
step (encoder included), one actor step, one target update. Batches are random arrays made up
front, so the figure is the learner alone (no env, no replay sampling). Rows, side by side:

- ``paper``: 84x84, frame stack 3, batch 256, hidden 1024 (the published configuration) with
  se_robot's default settings (channels-last, integer-gather shift, fused Adam, ``amp: auto``);
- ``paper+plain``: the same with every speed option off (NCHW, grid_sample shift, foreach Adam,
  fp32); ``paper-cl``, ``paper-gather``, ``paper-fused``: the default less one option;
  ``paper+bf16``: the default with bf16 autocast forced on;
- on CUDA only: ``paper+graph``, the default with the update replayed as CUDA graphs
  (``cuda_graph: on``); ``paper+pinned``, that on batches held in pinned host memory, as a replay
  buffer gathers them when the learner replays graphs (``ReplayBuffer.pin_batches``);
- ``reference`` (with ``--reference DIR``): facebookresearch/drqv2's own ``DrQV2Agent.update``,
  imported from a checkout at DIR, at the paper configuration on batches of the same kind;
- ``cpu``: 64x64, frame stack 3, batch 128 (``--cpu-image``/``--cpu-batch`` change it), default
  settings, and ``cpu+plain``;
- ``frozen``: the paper's batch with a frozen encoder whose per-frame features come from the
  replay cache (so an update is MLPs only); once with the DrQ-v2 conv's own 3 x 39200 features,
  once with 512 per frame (the size of a pretrained ResNet-18's pooled output).

With a reference row every row also gets its updates/s as a ratio to the reference's, measured
in the same interleaved rounds.

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
                   help="comma list of rows to run (reference, paper, paper+plain, paper-cl, paper-gather, "
                        "paper-fused, paper+bf16, paper+graph, paper+pinned (these two on CUDA), cpu, cpu+plain, "
                        "frozen, frozen512) or 'all'")
    p.add_argument("--reference", metavar="DIR", default="",
                   help="a checkout of facebookresearch/drqv2: adds its DrQV2Agent.update as the 'reference' row "
                        "(its drqv2.py imports hydra and its utils.py omegaconf, so both must be importable)")
    p.add_argument("--profile", action="store_true",
                   help="then profile more updates of each row and print op time per update by kind (torch.profiler)")
    p.add_argument("--profile-updates", type=int, default=1, help="updates per row under the profiler")
    p.set_defaults(func=run)


VARIANTS = {  # suffix -> DrQV2Config overrides of the default settings
    "": {},
    "+plain": {"channels_last": False, "aug_method": "grid_sample", "fused_optim": False, "amp": "none"},
    "-cl": {"channels_last": False},
    "-gather": {"aug_method": "grid_sample"},
    "-fused": {"fused_optim": False},
    "+bf16": {"amp": "bf16"},
}
CUDA_VARIANTS = {"+graph": {"cuda_graph": "on"}, "+pinned": {"cuda_graph": "on"}}   # +pinned: and the batches


def _rows(args: argparse.Namespace, cuda: bool) -> list[dict]:
    rows = [{"name": "reference", "image": 84, "batch": 256, "reference": args.reference}] if args.reference else []
    for name, image, batch, suffixes in (("paper", 84, 256, {**VARIANTS, **(CUDA_VARIANTS if cuda else {})}),
                                         ("cpu", args.cpu_image, args.cpu_batch, ("", "+plain"))):
        for suffix in suffixes:
            settings = VARIANTS.get(suffix, CUDA_VARIANTS.get(suffix))
            rows.append({"name": name + suffix, "image": image, "batch": batch, "settings": settings,
                         "pinned": suffix == "+pinned"})
    rows.append({"name": "frozen", "image": 84, "batch": args.frozen_batch, "frozen": "drqv2"})
    rows.append({"name": "frozen512", "image": 84, "batch": args.frozen_batch, "frozen": 512})
    if args.rows != "all":
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        known = {r["name"] for r in rows}
        unknown = [w for w in wanted if w not in known]
        if "reference" in unknown:
            raise SystemExit("benchmarks learner: the reference row needs --reference DIR")
        if not cuda and {"paper+graph", "paper+pinned"} & set(unknown):
            raise SystemExit("benchmarks learner: paper+graph and paper+pinned are CUDA rows (--device cuda)")
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


def _pinned(array):
    """A copy of a NumPy array in page-locked host memory (torch's caching host allocator)."""
    import torch

    out = torch.empty(array.shape, dtype=torch.from_numpy(array[:0]).dtype, pin_memory=True).numpy()
    out[...] = array
    return out


class _Batches:
    """Prepared batches by shape, made once: rows of one shape (the reference and the paper rows)
    all update on the same arrays (or pinned copies of them)."""

    def __init__(self, rng) -> None:
        self.rng = rng
        self.made: dict = {}

    def get(self, batch: int, obs: dict, action_dim: int, pinned: bool = False) -> list:
        import dataclasses

        key = (batch, tuple(sorted(obs.items())), action_dim)
        if key not in self.made:
            self.made[key] = _synthetic_batches(self.rng, 2, batch, obs, action_dim)
        if not pinned:
            return self.made[key]
        if key + ("pinned",) not in self.made:
            self.made[key + ("pinned",)] = [
                dataclasses.replace(b, **{f.name: ({k: _pinned(v) for k, v in value.items()} if isinstance(value, dict)
                                                   else _pinned(value))
                                          for f in dataclasses.fields(b) for value in [getattr(b, f.name)]})
                for b in self.made[key]]
        return self.made[key + ("pinned",)]


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


class _ReferenceLearner:
    """facebookresearch/drqv2's ``DrQV2Agent`` from a checkout, driven like se_robot's agent.

    Its ``update(replay_iter, step)`` takes the next item of an iterator of (obs, action, reward,
    discount, next_obs) arrays, reward and discount of shape (B, 1), as its replay loader yields;
    each call hands it the next prepared se_robot Batch in that form.
    """

    def __init__(self, directory: str, device, hidden_dim: int, action_dim: int, stack: int) -> None:
        import importlib.util
        import sys
        from pathlib import Path

        import torch

        source = Path(directory) / "drqv2.py"
        if not source.is_file():
            raise SystemExit(f"benchmarks learner: --reference {directory}: no drqv2.py there "
                             "(expected a checkout of facebookresearch/drqv2)")
        if directory not in sys.path:   # its drqv2.py does `import utils` from its own folder
            sys.path.insert(0, directory)
        spec = importlib.util.spec_from_file_location("drqv2_reference", source)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ImportError as e:
            raise SystemExit(f"benchmarks learner: --reference {directory}: {e} (install the reference's own "
                             "imports, e.g. hydra-core and omegaconf, to run it)") from None
        self.device = device
        with torch.random.fork_rng(devices=[]):   # its networks draw from the global generator
            torch.manual_seed(0)
            self.agent = module.DrQV2Agent(
                obs_shape=(3 * stack, 84, 84), action_shape=(action_dim,), device=device, lr=1e-4, feature_dim=50,
                hidden_dim=hidden_dim, critic_target_tau=0.01, num_expl_steps=2000, update_every_steps=1,
                stddev_schedule="linear(1.0,0.1,500000)", stddev_clip=0.3, use_tb=True)

    def update(self, replay: "_SyntheticReplay", demos: None, step: int) -> dict:
        b = replay.sample(0)
        item = (b.obs["pixels"], b.action, b.reward[:, None], b.discount[:, None], b.next_obs["pixels"])
        return self.agent.update(iter((item,)), step)


OP_KINDS = (  # kind -> substrings of aten op names; the first kind that matches an op takes it
    ("conv forward", ("mkldnn_convolution", "_convolution_pointwise")),
    ("conv backward", ("convolution_backward",)),
    ("ReLU forward and backward", ("threshold_backward", "clamp_min", "relu")),
    ("random shift and float conversion", ("grid_sampler", "replication_pad", "index", "gather", "copy_",
                                           "div", "sub")),
    ("matmuls (trunks, MLPs)", ("addmm", "mm", "bmm", "baddbmm")),
    ("optimizers and target update", ("adam", "lerp", "addcdiv", "addcmul", "sqrt", "_foreach", "mul_", "add_")),
)


def _profile(agent, replay: "_SyntheticReplay", updates: int) -> dict[str, float]:
    """Seconds of op time per update, by kind: aten ops' self CPU time (:data:`OP_KINDS`, then
    'other'); on a GPU also the device's time in kernels and in host-to-device copies, which the
    CPU kinds do not show (there a CPU op's time is its launch and dispatch, not its arithmetic)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = agent.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(updates):
            agent.update(replay, None, 10_000)
        if cuda:
            import torch
            torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        if event.device_type == DeviceType.CUDA:   # a kernel or a copy, timed on the device
            kind = "GPU: host-to-device copies" if "HtoD" in event.key else "GPU: kernels and other copies"
            kinds[kind] = kinds.get(kind, 0.0) + event.self_device_time_total / 1e6 / updates
            continue
        if not event.key.startswith("aten::"):
            continue
        name = event.key[len("aten::"):]
        kind = next((k for k, parts in OP_KINDS if any(part in name for part in parts)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + event.self_cpu_time_total / 1e6 / updates
    return kinds


def _build(row: dict, args: argparse.Namespace, device, tmp: str, batches: "_Batches", action_dim: int = 6,
           stack: int = 3):
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np

    from se_robot.agents.drqv2 import DrQV2Agent, DrQV2Config
    from se_robot.agents.encoders import build_encoder, save_encoder

    size = row["image"]
    pix = SimpleNamespace(shape=(3 * stack, size, size))
    if row.get("reference"):
        replay = _SyntheticReplay(batches.get(row["batch"], {"pixels": pix.shape}, action_dim))
        agent = _ReferenceLearner(row["reference"], device, args.hidden_dim, action_dim, stack)
        agent.update(replay, None, 10_000)   # warm-up, as for se_robot's rows
        return agent, replay, f"facebookresearch/drqv2 DrQV2Agent.update from {row['reference']}"
    space = SimpleNamespace(spaces={"pixels": pix})
    act = SimpleNamespace(shape=(action_dim,), low=-np.ones(action_dim), high=np.ones(action_dim))
    over = {"batch_size": row["batch"], "hidden_dim": args.hidden_dim, "utd": 1, "update_every_steps": 1,
            **row.get("settings", {})}
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
    replay = _SyntheticReplay(batches.get(row["batch"], obs, action_dim, row.get("pinned", False)))
    cfg = agent.cfg
    desc = (f"frozen, cached {obs['features'][0]} features" if frozen else
            f"drqv2 conv{' channels-last' if cfg.channels_last else ''} {cfg.aug_method}-shift"
            f"{' fused-adam' if cfg.fused_optim else ''} amp={agent.amp}"
            f"{' cuda-graph' if agent.graphed else ''}{' pinned-batches' if row.get('pinned') else ''}")
    # Warm-up: Adam state, allocator, kernel choice; with CUDA graphs the eager warm-up updates
    # and the capture (see se_robot.agents.cuda_graph), so that no row times them.
    for _ in range(6 if agent.graphed else 1):
        agent.update(replay, None, 10_000)
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
    rows = _rows(args, device.type == "cuda")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"load1={load_before:.1f}; {args.rounds} interleaved rounds, >={args.seconds:.0f}s and "
          f">={args.min_updates} updates per row in all; hidden {args.hidden_dim}, feature 50", flush=True)
    totals = {row["name"]: [0, 0.0, 0.0] for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        batches = _Batches(rng)
        built = {row["name"]: _build(row, args, device, tmp, batches) for row in rows}
        per_round = args.seconds / args.rounds
        min_per_round = max(1, -(-args.min_updates // args.rounds))
        for _ in range(args.rounds):  # interleaved, so a burst of load elsewhere hits every row alike
            for row in rows:
                agent, replay, _ = built[row["name"]]
                n, wall, cpu = _run_for(agent, replay, per_round, min_per_round)
                t = totals[row["name"]]
                t[0], t[1], t[2] = t[0] + n, t[1] + wall, t[2] + cpu
        profiles = ({name: _profile(agent, replay, args.profile_updates) for name, (agent, replay, _) in built.items()}
                    if args.profile else {})
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ref = totals.get("reference")
    ref_rate = ref[0] / ref[1] if ref else None
    print(f"{'row':<14} {'image':>5} {'batch':>5} {'updates/s':>10} {'ms/update':>10} "
          f"{'cpu-ms/upd':>10} {'n':>4} {'vs ref':>7}  settings")
    for row in rows:
        n, wall, cpu = totals[row["name"]]
        ratio = f"{n / wall / ref_rate:>6.2f}x" if ref_rate else f"{'-':>7}"
        print(f"{row['name']:<14} {row['image']:>5} {row['batch']:>5} {n / wall:>10.2f} {1000 * wall / n:>10.1f} "
              f"{1000 * cpu / n:>10.1f} {n:>4} {ratio}  {built[row['name']][2]}")
    for name, kinds in profiles.items():
        total = sum(v for k, v in kinds.items() if not k.startswith("GPU"))
        print(f"profile {name}, per update: {1000 * total:.1f} ms of aten op time on the CPU; " + "; ".join(
            f"{kind} {1000 * sec:.1f} ms" + ("" if kind.startswith("GPU") else f" ({100 * sec / total:.0f}%)")
            for kind, sec in sorted(kinds.items(), key=lambda kv: -kv[1])))
    print(f"load1 after: {load_after:.1f}. cpu-ms/upd is process CPU time (all threads): on a shared machine it "
          "moves less with other people's load than wall-clock updates/s does.")
    return 0
