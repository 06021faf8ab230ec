"""SAC's critic ensemble (REDQ): N critics, a random M-subset of them in each update's target min."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from se_robot.agents.losses import critic_target
from se_robot.agents.sac import SACAgent, create
from se_robot.config import ConfigError
from tests.test_sac import ACT, OBS, bandit_replay, small_cfg

pytestmark = pytest.mark.timeout(120)


def test_subset_is_m_distinct_members_drawn_anew_each_update():
    agent = create(OBS, ACT, small_cfg(num_critics=10, num_target_critics=2), seed=0)
    draws = [agent.target_subset() for _ in range(200)]
    for subset in draws:
        members = subset.tolist()
        assert len(members) == 2 and len(set(members)) == 2 and all(0 <= m < 10 for m in members)
    distinct = {tuple(sorted(s.tolist())) for s in draws}
    assert len(distinct) > 20                                     # 45 pairs exist: it is not a fixed pair
    assert {m for s in draws for m in s.tolist()} == set(range(10))   # every member takes part


def test_full_subset_is_the_min_over_the_whole_ensemble():
    agent = create(OBS, ACT, small_cfg(num_critics=4, num_target_critics=4), seed=0)
    assert agent.target_subset() is None
    next_q = torch.tensor([[[3.0]], [[1.0]], [[2.0]], [[5.0]]])   # (N, B, 1)
    reward, discount = torch.tensor([[0.5]]), torch.tensor([[0.9]])
    torch.testing.assert_close(critic_target(reward, discount, next_q, agent.target_subset()),
                               torch.tensor([[0.5 + 0.9 * 1.0]]))
    torch.testing.assert_close(critic_target(reward, discount, next_q, torch.tensor([0, 3])),
                               torch.tensor([[0.5 + 0.9 * 3.0]]))


def test_every_update_draws_its_subset_and_the_target_uses_it():
    agent = create(OBS, ACT, small_cfg(num_critics=5, num_target_critics=2, utd_ratio=3), seed=0)
    assert agent.critic(torch.zeros(1, 5)).shape[0] == 5
    calls = []
    draw = agent.target_subset
    agent.target_subset = lambda: calls.append(1) or draw()
    agent.update(bandit_replay(300), None, step=0)
    assert len(calls) == 3

    # the same update with two different fixed subsets gives two different critic losses
    replay = bandit_replay(300)
    batch = agent.to_tensors(replay.sample(64))
    batch["discount"] = torch.full_like(batch["discount"], 0.99)   # the bandit's episodes end: bootstrap anyway
    with torch.no_grad():   # spread the target critics apart, as training does
        for p in agent.critic_target.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    losses = []
    for member in (0, 4):
        twin = create(OBS, ACT, small_cfg(num_critics=5, num_target_critics=2), seed=0)
        twin.load_state_dict(agent.state_dict())
        twin.target_subset = lambda m=member: torch.tensor([m, m])
        losses.append(twin.learn(batch)["loss/critic"])
    assert losses[0] != losses[1]


def test_subset_larger_than_the_ensemble_is_refused_by_name():
    with pytest.raises(ConfigError, match="num_target_critics"):
        SACAgent.create(OBS, ACT, {"num_critics": 2, "num_target_critics": 3})


def test_resumed_agent_draws_the_same_subsets():
    agent = create(OBS, ACT, small_cfg(num_critics=6, num_target_critics=2), seed=3)
    agent.target_subset()
    state = agent.state_dict()
    expected = [agent.target_subset().tolist() for _ in range(5)]
    resumed = create(OBS, ACT, small_cfg(num_critics=6, num_target_critics=2), seed=99)
    resumed.load_state_dict(state)
    assert [resumed.target_subset().tolist() for _ in range(5)] == expected


def test_redq_ensemble_learns_the_bandit():
    space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32)})
    agent = create(space, ACT, small_cfg(num_critics=5, num_target_critics=2, utd_ratio=50), seed=1)
    replay = bandit_replay(1000)
    for step in range(12):
        agent.update(replay, None, step)
    rng = np.random.default_rng(5)
    states = rng.normal(size=(50, 3)).astype(np.float32)
    errors = [np.abs(agent.act({"state": s}, 0, True) - 0.5 * np.tanh(s[:2])).mean() for s in states]
    assert np.mean(errors) < 0.15, np.mean(errors)
