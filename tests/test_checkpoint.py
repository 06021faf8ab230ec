"""Checkpoints are data, not code: a manifest of sha256 sums catches damaged files, a damaged newest
checkpoint falls back to the newest intact one, and a planted pickle is refused without running."""

from __future__ import annotations

import json
import os
import pathlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from se_robot import checkpoint
from se_robot.agents.replay import ReplayBuffer, ReplayConfig
from se_robot.checkpoint import CheckpointError, CheckpointWarning

pytestmark = pytest.mark.timeout(300)


def _agent_state(value: float) -> dict:
    """Network weights and Adam state, as an agent's state_dict holds them."""
    net = torch.nn.Linear(8, 8)
    torch.nn.init.constant_(net.weight, value)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(2, 8)).sum().backward()
    opt.step()
    return {"actor": net.state_dict(), "actor_opt": opt.state_dict()}


def _run(tmp_path: Path, steps: tuple[int, ...] = (10, 20, 30)) -> Path:
    run = tmp_path / "run"
    for step in steps:
        checkpoint.save(run, step, _agent_state(float(step)), {"step": step}, {"task": "reach"}, keep_last=5)
    return run


def _flip_bytes(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _weight(saved: dict) -> float:
    return round(float(saved["agent"]["actor"]["weight"][0, 0]))   # one Adam step moved it by 1e-3


class _RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: the shape of a planted pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_save_writes_a_manifest_of_every_file_and_load_verifies_it(tmp_path):
    run = _run(tmp_path, (10,))
    ckpt = checkpoint.list_checkpoints(run)[-1]
    manifest = json.loads((ckpt / checkpoint.MANIFEST).read_text())
    assert set(manifest["files"]) == {"agent.pt", "trainer.pt", "config.yaml"}
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (ckpt / name).stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saved = checkpoint.load(run)
    assert saved["path"] == ckpt and _weight(saved) == 10.0 and saved["trainer"]["step"] == 10


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_newest_checkpoint_falls_back_to_newest_intact_with_a_warning(tmp_path, damage):
    run = _run(tmp_path)
    newest = checkpoint.list_checkpoints(run)[-1]
    agent = newest / "agent.pt"
    before = agent.stat().st_size
    if damage == "flip":        # the case: 64 flipped bytes loaded silently as NaN optimizer state
        _flip_bytes(agent)
        assert agent.stat().st_size == before
    elif damage == "truncate":
        os.truncate(agent, before // 2)
    else:
        agent.unlink()
    with pytest.warns(CheckpointWarning, match=r"step_000000030/agent\.pt"):
        saved = checkpoint.load(run)
    assert saved["path"].name == "step_000000020" and _weight(saved) == 20.0
    for state in saved["agent"]["actor_opt"]["state"].values():
        assert all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v))


def test_saving_after_a_fallback_never_prunes_the_intact_checkpoints(tmp_path):
    run = _run(tmp_path, (10, 20))
    _flip_bytes(checkpoint.list_checkpoints(run)[-1] / "agent.pt")
    with pytest.warns(CheckpointWarning):
        assert checkpoint.resolve(run).name == "step_000000010"
    checkpoint.save(run, 15, _agent_state(15.0), {"step": 15}, {}, keep_last=1)   # the resumed run saves
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["step_000000015", "step_000000020"]
    with pytest.warns(CheckpointWarning, match="step_000000020"):
        assert _weight(checkpoint.load(run)) == 15


def test_damaged_checkpoint_named_explicitly_is_refused_naming_the_file(tmp_path):
    run = _run(tmp_path, (10, 20))
    newest = checkpoint.list_checkpoints(run)[-1]
    _flip_bytes(newest / "trainer.pt", 8)
    with pytest.raises(CheckpointError, match=r"step_000000020/trainer\.pt: sha256 does not match"):
        checkpoint.load(newest)


def test_no_intact_checkpoint_lists_every_one_tried(tmp_path):
    run = _run(tmp_path, (10, 20))
    first, second = checkpoint.list_checkpoints(run)
    _flip_bytes(second / "agent.pt")
    (first / checkpoint.MANIFEST).unlink()
    with pytest.raises(CheckpointError) as info:
        checkpoint.resolve(run)
    message = str(info.value)
    assert "no intact checkpoint" in message
    assert f"{second}/agent.pt" in message and f"{first}/{checkpoint.MANIFEST}: missing" in message
    assert isinstance(info.value, FileNotFoundError)   # what train --resume and evaluate turn into a clear error


def test_a_file_added_to_a_checkpoint_is_refused(tmp_path):
    run = _run(tmp_path, (10,))
    ckpt = checkpoint.list_checkpoints(run)[-1]
    (ckpt / "extra.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"extra\.pt: not listed"):
        checkpoint.resolve(ckpt)


def test_replay_buffer_files_are_covered_by_the_manifest(tmp_path):
    buf = ReplayBuffer(ReplayConfig(capacity=16, n_step=1), seed=0)
    buf.add_first({"state": np.zeros(3, np.float32)})
    for _ in range(4):
        buf.add(np.zeros(2, np.float32), 1.0, {"state": np.ones(3, np.float32)}, False, False)
    checkpoint.save(tmp_path, 10, _agent_state(1.0), {"step": 10}, {}, buffers={"replay": buf})
    ckpt = checkpoint.list_checkpoints(tmp_path)[-1]
    assert "replay/reward.npy" in json.loads((ckpt / checkpoint.MANIFEST).read_text())["files"]
    _flip_bytes(ckpt / "replay" / "reward.npy", 4)
    with pytest.raises(CheckpointError, match=r"replay/reward\.npy: sha256"):
        checkpoint.resolve(ckpt)


@pytest.mark.parametrize("target", ["agent.pt", "trainer.pt"])
def test_planted_pickle_is_refused_without_running_even_with_a_matching_manifest(tmp_path, target):
    run = _run(tmp_path, (10,))
    ckpt = checkpoint.list_checkpoints(run)[-1]
    marker = tmp_path / "pwned"
    torch.save({"actor": _RunsCode(marker)}, ckpt / target)
    with pytest.raises(CheckpointError, match=rf"{target}: .*manifest"):   # as planted: the sums no longer match
        checkpoint.load(run)
    checkpoint._write_manifest(ckpt)                                   # a planter who rewrites the manifest too
    with pytest.raises(CheckpointError, match=rf"{target}: not only tensors .*pickled Python objects, refused"):
        checkpoint.load(ckpt)
    assert not marker.exists()


def test_state_only_run_resumes_and_evaluates_past_a_damaged_newest_checkpoint(tmp_path):
    """``train --resume`` (via build_trainer) and ``evaluate --checkpoint`` share the verifying loader."""
    from se_robot.cli import main
    from se_robot.train import build_trainer, load_config

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "task": "reach", "algo": "sac", "obs_mode": "state", "action_repeat": 2, "steps": 40, "seed": 1,
        "learning_starts": 10, "eval_every": 1000, "eval_episodes": 1, "eval_video": False,
        "checkpoint_every": 20, "keep_checkpoints": 3, "log_every": 10, "tensorboard": False,
        "progress": False, "device": "cpu", "threads": 1, "replay": {"capacity": 200},
        "agent": {"batch_size": 8, "hidden_dim": 16}}))
    trainer = build_trainer(load_config(cfg_path), tmp_path / "run")
    trainer.train()
    trainer.logger.close()
    found = checkpoint.list_checkpoints(tmp_path / "run")
    assert found[-1].name == "step_000000040" and len(found) >= 2
    older = int(found[-2].name.removeprefix("step_"))
    _flip_bytes(found[-1] / "agent.pt")
    with pytest.warns(CheckpointWarning, match="step_000000040/agent.pt"):
        ckpt = checkpoint.resolve(tmp_path / "run")
    resumed = build_trainer(load_config(saved=ckpt / "config.yaml"), tmp_path / "run", resume=ckpt)
    assert resumed.step == older
    resumed.logger.close()
    with pytest.warns(CheckpointWarning, match="step_000000040/agent.pt"):
        assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--episodes", "1",
                     "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["step"] == older


def test_a_checkpoint_without_a_manifest_is_refused_until_its_owner_seals_it(tmp_path, capsys):
    """An older se_robot wrote no manifest: refused as damaged (with the command that vouches for it),
    sealed after its files load as finite tensors; a damaged or already sealed one is not sealed."""
    from se_robot.cli import main

    run = _run(tmp_path, (10, 20))
    old, damaged = checkpoint.list_checkpoints(run)
    for ckpt in (old, damaged):
        (ckpt / checkpoint.MANIFEST).unlink()
    with pytest.raises(CheckpointError, match=rf"se-robot checkpoint seal {old}"):
        checkpoint.resolve(old)
    state = torch.load(damaged / "agent.pt", weights_only=True)
    state["actor"]["bias"] = torch.full_like(state["actor"]["bias"], float("nan"))
    torch.save(state, damaged / "agent.pt")
    assert main(["checkpoint", "seal", str(old), str(damaged)]) == 1
    err = capsys.readouterr().err
    assert f"{damaged / 'agent.pt'}: NaN or inf at agent.pt/actor/bias" in err
    assert not (damaged / checkpoint.MANIFEST).exists()
    with pytest.warns(checkpoint.CheckpointWarning, match="step_000000020"):
        assert checkpoint.resolve(run) == old          # sealed: the newest intact one
    assert checkpoint.load(old)["trainer"]["step"] == 10
    assert main(["checkpoint", "seal", str(old)]) == 1   # already sealed: nothing to do
    assert "already there" in capsys.readouterr().err
