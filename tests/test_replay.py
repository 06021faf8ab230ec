"""Replay buffer: n-step targets, frame stacks, the ring's write head, demos, PER, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from se_robot.agents.prioritized import SumTree
from se_robot.agents.replay import ReplayBuffer, sample_mixed
from se_robot.data.demos import load_demos

pytestmark = pytest.mark.timeout(120)

GAMMA = 0.5


def _obs(ep: int, t: int, size: int = 4) -> dict[str, np.ndarray]:
    """State (ep, t) and a channel-first stack of two frames, as PixelFrameStack(2) gives: the older
    frame all 255, the newest one 10*ep + t everywhere, so samples can be decoded."""
    newest = np.full((3, size, size), (10 * ep + t) % 256, np.uint8)
    return {"state": np.array([ep, t], np.float32),
            "pixels": np.concatenate([np.full_like(newest, 255), newest])}


def _raw_obs(ep: int, t: int, size: int) -> dict[str, np.ndarray]:
    """What an episode records: the camera's raw H x W x 3 frame."""
    return {"state": np.array([ep, t], np.float32), "pixels": np.full((size, size, 3), 10 * ep + t, np.uint8)}


def _add_episode(buf: ReplayBuffer, ep: int, rewards: list[float], end: str) -> None:
    buf.add_first(_obs(ep, 0))
    for t, r in enumerate(rewards):
        last = t == len(rewards) - 1
        buf.add(np.array([ep, t], np.float32), r, _obs(ep, t + 1),
                terminated=last and end == "terminated", truncated=last and end == "truncated")


def _decode(batch, i: int) -> tuple[int, int, int, int]:
    return (int(batch.obs["state"][i, 0]), int(batch.obs["state"][i, 1]),
            int(batch.next_obs["state"][i, 0]), int(batch.next_obs["state"][i, 1]))


def test_n_step_targets_with_termination_and_truncation():
    buf = ReplayBuffer(capacity=100, frame_stack=1, n_step=3, discount=GAMMA, seed=0)
    r_term = [1.0, 2.0, 3.0, 4.0, 5.0]      # episode 0 ends by termination after 5 steps
    r_trunc = [10.0, 20.0, 30.0, 40.0]       # episode 1 ends by truncation (time limit) after 4 steps
    _add_episode(buf, 0, r_term, "terminated")
    _add_episode(buf, 1, r_trunc, "truncated")
    batch = buf.sample(2000)
    seen = set()
    for i in range(len(batch.indices)):
        ep, t, next_ep, next_t = _decode(batch, i)
        rewards = r_term if ep == 0 else r_trunc
        m = min(3, len(rewards) - t)
        expected_return = sum(GAMMA ** j * rewards[t + j] for j in range(m))
        ends_here = t + m == len(rewards)
        expected_discount = 0.0 if (ep == 0 and ends_here) else GAMMA ** m
        assert next_ep == ep and next_t == t + m
        assert batch.reward[i] == pytest.approx(expected_return)
        assert batch.discount[i] == pytest.approx(expected_discount)
        np.testing.assert_array_equal(batch.action[i], [ep, t])
        seen.add((ep, t))
    # Every transition was drawable; terminal observations are never a start.
    assert seen == {(0, t) for t in range(5)} | {(1, t) for t in range(4)}
    assert batch.weights.dtype == np.float32 and np.all(batch.weights == 1)


def test_hand_computed_values():
    buf = ReplayBuffer(capacity=50, frame_stack=1, n_step=3, discount=GAMMA, seed=1)
    _add_episode(buf, 0, [1.0, 2.0, 3.0, 4.0, 5.0], "terminated")
    _add_episode(buf, 1, [10.0, 20.0, 30.0, 40.0], "truncated")
    reward, discount, boot, ok = buf._targets(np.array([0, 3, 4, 6, 8, 9]))
    # abs 0 = (0,0); 3 = (0,3); 4 = (0,4); 6 = (1,0); 8 = (1,2); 9 = (1,3)
    np.testing.assert_allclose(reward, [1 + 1 + 0.75, 4 + 2.5, 5, 10 + 10 + 7.5, 30 + 20, 40])
    np.testing.assert_allclose(discount, [0.125, 0.0, 0.0, 0.125, 0.25, 0.5])
    np.testing.assert_array_equal(boot, [3, 5, 5, 9, 10, 10])
    assert ok.all()


def test_frame_stack_pads_with_first_frame_of_episode():
    buf = ReplayBuffer(capacity=100, frame_stack=3, n_step=1, discount=GAMMA, seed=0)
    _add_episode(buf, 0, [0.0] * 4, "truncated")
    _add_episode(buf, 1, [0.0] * 4, "terminated")
    batch = buf.sample(500)
    assert batch.obs["pixels"].shape == (500, 9, 4, 4) and batch.obs["pixels"].dtype == np.uint8
    for i in range(500):
        ep, t, _, nt = _decode(batch, i)
        frames = batch.obs["pixels"][i].reshape(3, 3, 4, 4)[:, 0, 0, 0]
        expected = [10 * ep + max(0, t - 2), 10 * ep + max(0, t - 1), 10 * ep + t]
        np.testing.assert_array_equal(frames, expected)
        nframes = batch.next_obs["pixels"][i].reshape(3, 3, 4, 4)[:, 0, 0, 0]
        np.testing.assert_array_equal(nframes, [10 * ep + max(0, nt - 2), 10 * ep + max(0, nt - 1), 10 * ep + nt])


def test_ring_never_samples_across_write_head():
    buf = ReplayBuffer(capacity=13, frame_stack=3, n_step=3, discount=GAMMA, seed=3)
    for ep in range(7):
        _add_episode(buf, ep, [1.0] * 5, "truncated")
        # Leave the last episode open half way: its tail is not drawable yet.
    buf.add_first(_obs(7, 0))
    for t in range(2):
        buf.add(np.zeros(2, np.float32), 1.0, _obs(7, t + 1), False, False)
    assert len(buf) == 13
    batch = buf.sample(3000)
    for i in range(3000):
        ep, t, nep, nt = _decode(batch, i)
        assert nep == ep and nt > t
        frames = batch.obs["pixels"][i].reshape(3, 3, 4, 4)[:, 0, 0, 0]
        # Every frame of the stack comes from this episode, in order (nothing overwritten).
        np.testing.assert_array_equal(frames, [10 * ep + max(0, t - 2), 10 * ep + max(0, t - 1), 10 * ep + t])
        if ep == 7:
            assert nt <= 2         # never reads past the newest written observation
    assert {(int(s[0])) for s in batch.obs["state"]} <= {5, 6, 7}


def test_stores_the_newest_frame_of_a_channel_first_stack():
    buf = ReplayBuffer(capacity=10, frame_stack=1, n_step=1, seed=0)
    frames = np.arange(9 * 2 * 5, dtype=np.uint8).reshape(9, 2, 5)   # a stack of three (3, 2, 5) frames
    buf.add_first({"pixels": frames, "task": np.zeros(2, np.float32)})
    buf.add(np.zeros(1), 0.0, {"pixels": frames, "task": np.ones(2, np.float32)}, True, False)
    batch = buf.sample(2)
    np.testing.assert_array_equal(batch.obs["pixels"][0], frames[-3:])
    assert set(batch.obs) == {"pixels", "task"}                        # every key stored as is
    with pytest.raises(ValueError, match="frame stack"):                # H x W x 3 is not the agents' layout
        ReplayBuffer(capacity=10).add_first({"pixels": np.zeros((5, 4, 3), np.uint8)})


def test_sample_mixed_exact_fraction_and_mask():
    online = ReplayBuffer(capacity=200, frame_stack=2, n_step=2, discount=GAMMA, seed=0)
    demos = ReplayBuffer(capacity=200, frame_stack=2, n_step=2, discount=GAMMA, seed=1)
    for ep in range(3):
        _add_episode(online, ep, [0.0] * 6, "truncated")
        _add_episode(demos, 100 + ep, [1.0] * 6, "terminated")
    for batch_size, fraction in ((256, 0.5), (100, 0.25), (7, 0.3), (10, 0.0), (10, 1.0)):
        batch = sample_mixed(online, demos, batch_size, fraction)
        assert len(batch.is_demo) == batch_size == batch.obs["pixels"].shape[0] == batch.action.shape[0]
        assert batch.is_demo.sum() == round(batch_size * fraction)
        from_demo = batch.obs["state"][:, 0] >= 100
        np.testing.assert_array_equal(from_demo, batch.is_demo)
    batch = sample_mixed(online, None, 64, 0.5)
    assert not batch.is_demo.any() and len(batch.is_demo) == 64
    with pytest.raises(ValueError):
        sample_mixed(online, demos, 8, 1.5)


def test_sum_tree_sampling_proportions():
    tree = SumTree(5)
    priorities = np.array([1.0, 2.0, 0.0, 3.0, 4.0])
    tree.set(np.arange(5), priorities)
    assert tree.total == pytest.approx(10.0)
    rng = np.random.default_rng(0)
    draws = np.concatenate([tree.sample(1000, rng) for _ in range(100)])
    freq = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(freq, priorities / 10.0, atol=0.01)
    tree.set([4, 4], [0.0, 1.0])                       # the last write of a slot wins
    assert tree.total == pytest.approx(7.0)
    with pytest.raises(ValueError):
        tree.set([0], [-1.0])


def test_prioritized_replay_weights_and_updates():
    buf = ReplayBuffer(capacity=64, frame_stack=1, n_step=1, discount=GAMMA, prioritized=True,
                       alpha=1.0, beta=1.0, seed=0)
    _add_episode(buf, 0, [0.0] * 10, "truncated")
    batch = buf.sample(32)
    assert np.allclose(batch.weights, 1.0)            # new transitions share the max priority
    slots = np.arange(10)
    td = np.where(slots == 3, 9.0, 1.0)               # slot 3 gets priority 9, the others 1
    buf.update_priorities(slots, td)
    batch = buf.sample(18000)
    t = batch.obs["state"][:, 1].astype(int)
    share = np.mean(t == 3)
    assert share == pytest.approx(9 / 18, abs=0.02)
    # Importance weights undo the bias: rare slots get weight 1, the frequent one 1/9.
    assert batch.weights[t == 3].max() == pytest.approx(1 / 9, rel=1e-4)
    assert batch.weights[t != 3].min() == pytest.approx(1.0)


def test_save_load_round_trip(tmp_path):
    buf = ReplayBuffer(capacity=20, frame_stack=3, n_step=2, discount=GAMMA, prioritized=True, seed=5)
    for ep in range(5):                               # wraps the ring
        _add_episode(buf, ep, [float(ep)] * 5, "terminated" if ep % 2 else "truncated")
    buf.add_first(_obs(9, 0))
    buf.add(np.zeros(2, np.float32), 1.0, _obs(9, 1), False, False)
    buf.update_priorities(np.arange(5), np.arange(5.0))
    buf.save(tmp_path / "replay")
    buf.save(tmp_path / "replay")                     # overwriting an existing save is fine
    loaded = ReplayBuffer.load(tmp_path / "replay")
    a, b = buf.sample(64), loaded.sample(64)
    for key in a.obs:
        np.testing.assert_array_equal(a.obs[key], b.obs[key])
        np.testing.assert_array_equal(a.next_obs[key], b.next_obs[key])
    for name in ("action", "reward", "discount", "weights", "indices"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # The open episode continues after loading exactly as it would have.
    for target in (buf, loaded):
        target.add(np.zeros(2, np.float32), 2.0, _obs(9, 2), True, False)
    np.testing.assert_array_equal(buf.sample(32).reward, loaded.sample(32).reward)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay"]   # no temp dirs left
    with pytest.raises(ValueError):
        ReplayBuffer.load(tmp_path)


def test_feature_cache_computes_each_frame_once():
    calls = []

    def fn(frames: np.ndarray) -> np.ndarray:
        calls.append(len(frames))
        return frames[:, 0, 0, :1].astype(np.float32) * np.ones((1, 2), np.float32)

    buf = ReplayBuffer(capacity=50, frame_stack=3, n_step=1, discount=GAMMA, seed=0)
    _add_episode(buf, 0, [0.0] * 3, "truncated")
    buf.set_feature_fn(fn)
    _add_episode(buf, 1, [0.0] * 3, "truncated")
    assert sum(calls) == 8                            # 4 frames at hook time, 4 added later
    batch = buf.sample(100)
    assert "pixels" not in batch.obs and batch.obs["features"].shape == (100, 6)
    for i in range(100):
        ep, t, _, _ = _decode(batch, i)
        np.testing.assert_array_equal(batch.obs["features"][i, ::2],
                                      [10 * ep + max(0, t - 2), 10 * ep + max(0, t - 1), 10 * ep + t])
    assert sum(calls) == 8                            # sampling computes nothing


def test_load_demos_from_episode_dataset(tmp_path):
    from se_robot.data.writer import EpisodeWriter

    writer = EpisodeWriter(tmp_path / "demos", {"task": "reach", "control_hz": 10.0})
    for ep in range(2):
        writer.start_episode(_raw_obs(ep, 0, size=8))
        for t in range(6):
            writer.add_step(np.array([ep, t], np.float32), _raw_obs(ep, t + 1, size=8), reward=1.0,
                            terminated=(ep == 1 and t == 5))
        writer.end_episode(success=True)
    buf = ReplayBuffer(capacity=100, frame_stack=2, n_step=1, discount=GAMMA, seed=0)
    assert load_demos(tmp_path / "demos", buf, obs_keys=("pixels", "state"), image_size=4) == 2
    assert buf.transitions == 12 and buf.episodes == 2
    batch = buf.sample(200)
    assert batch.obs["pixels"].shape == (200, 6, 4, 4)
    newest = batch.obs["pixels"][:, 3:]                 # resized raw frames, channel-first, unchanged values
    np.testing.assert_array_equal(newest[:, 0, 0, 0], 10 * batch.obs["state"][:, 0] + batch.obs["state"][:, 1])
    ep0_last = (batch.obs["state"][:, 0] == 0) & (batch.obs["state"][:, 1] == 5)
    assert np.all(batch.discount[ep0_last] == GAMMA)   # unterminated end of a demo bootstraps
    ep1_last = (batch.obs["state"][:, 0] == 1) & (batch.obs["state"][:, 1] == 5)
    assert np.all(batch.discount[ep1_last] == 0.0)
    # With action repeat 2, pairs of recorded steps become one agent step with summed reward.
    buf2 = ReplayBuffer(capacity=100, frame_stack=1, n_step=1, discount=GAMMA, seed=0)
    load_demos(tmp_path / "demos", buf2, obs_keys=("state",), action_repeat=2)
    assert buf2.transitions == 6
    batch = buf2.sample(100)
    assert np.all(batch.reward == 2.0) and np.all(batch.next_obs["state"][:, 1] - batch.obs["state"][:, 1] == 2)


def test_errors_say_what():
    buf = ReplayBuffer(capacity=10, frame_stack=1, n_step=1, seed=0)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4)
    with pytest.raises(RuntimeError, match="add_first"):
        buf.add(np.zeros(1), 0.0, {"state": np.zeros(2)}, False, False)
    buf.add_first({"state": np.zeros(2)})
    with pytest.raises(KeyError, match="keys"):
        buf.add(np.zeros(1), 0.0, {"other": np.zeros(2)}, False, False)


# ------------------------------------------------------------------ a saved buffer is data, not code

def _saved(tmp_path) -> "Path":
    buf = ReplayBuffer(capacity=20, frame_stack=2, n_step=2, discount=GAMMA, seed=1)
    for ep in range(2):
        _add_episode(buf, ep, [1.0, 2.0, 3.0], "terminated")
    buf.save(tmp_path / "replay")
    return tmp_path / "replay"


def _rewrite_npy(path, header: dict, payload: bytes) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(payload)


def test_load_refuses_a_pickled_array_and_runs_nothing(tmp_path):
    import pathlib

    class RunsCode:
        def __reduce__(self):
            return (pathlib.Path.touch, (tmp_path / "pwned",))

    directory = _saved(tmp_path)
    np.save(directory / "reward.npy", np.array([RunsCode()] * 8, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"reward\.npy: not a plain saved array"):
        ReplayBuffer.load(directory)
    assert not (tmp_path / "pwned").exists()


def test_load_refuses_a_header_claiming_more_than_the_file_holds(tmp_path):
    directory = _saved(tmp_path)
    _rewrite_npy(directory / "obs.pixels.npy", {"descr": "|u1", "fortran_order": False,
                                                "shape": (8, 3, 1 << 20, 1 << 20)}, b"\0" * 64)   # 24 TiB
    with pytest.raises(ValueError, match=r"obs\.pixels\.npy: not a plain saved array"):
        ReplayBuffer.load(directory)


@pytest.mark.parametrize("name,value,message", [
    ("reward", np.array([0, 1, np.nan, 3, 0, 1, 2, 3], np.float32), "contains NaN"),
    ("reward", np.zeros(8, np.float64), "expected dtype float32"),
    ("reward", np.zeros(5, np.float32), r"shape \(5,\), expected 8 saved rows"),
    ("action", np.zeros(8, np.float32), r"expected shape \(N, A\)"),
    ("rng", np.zeros(8, np.float32), "not an array a replay buffer saves"),
    ("priority", np.ones(8), "config is not prioritized"),
])
def test_load_checks_every_array_and_names_the_file(tmp_path, name, value, message):
    directory = _saved(tmp_path)
    np.save(directory / f"{name}.npy", value)
    with pytest.raises(ValueError, match=rf"{name}\.npy: .*{message}"):
        ReplayBuffer.load(directory)


def test_load_refuses_a_capacity_beyond_this_machines_memory(tmp_path):
    import json

    directory = _saved(tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    meta["config"]["capacity"] = 10**15
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json: capacity 1000000000000000 needs .* more than this machine"):
        ReplayBuffer.load(directory)
