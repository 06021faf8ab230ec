"""The probabilistic ensemble fits a known linear-Gaussian system, with calibrated variances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from se_robot.agents.dynamics import (DynamicsConfig, EnsembleLinear, EnsembleMLP, EnsembleTrainer,
                                      ProbabilisticEnsemble)
from se_robot.config import ConfigError, from_dict

pytestmark = pytest.mark.timeout(120)



NOISE_STD = 0.1


def linear_gaussian(n: int, rng: np.random.Generator):
    """s' = s + A s + B a + N(0, 0.1^2); r = c.s + N(0, 0.1^2)."""
    A = np.array([[0.0, 0.3, 0.0], [-0.2, 0.0, 0.1], [0.1, 0.0, -0.3]])
    B = np.array([[0.5, 0.0], [0.0, 0.5], [0.2, -0.2]])
    c = np.array([1.0, -0.5, 0.25])
    s = rng.normal(size=(n, 3)).astype(np.float32)
    a = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    ns = s + s @ A.T + a @ B.T + NOISE_STD * rng.normal(size=(n, 3))
    r = s @ c + NOISE_STD * rng.normal(size=n)
    return s, a, r.astype(np.float32), ns.astype(np.float32)


def small_cfg(**kw) -> DynamicsConfig:
    base = dict(ensemble_size=5, num_elites=3, hidden_dim=64, num_layers=2, max_epochs=60,
                max_grad_steps=3000, batch_size=128)
    base.update(kw)
    return DynamicsConfig(**base)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = ProbabilisticEnsemble(3, 2, small_cfg())
    trainer = EnsembleTrainer(model, torch.device("cpu"))
    metrics = trainer.fit(*linear_gaussian(3000, rng), rng=rng)
    return model, trainer, metrics


def test_batched_linear_matches_per_member_matmul():
    layer = EnsembleLinear(4, 3, 5)
    x = torch.randn(4, 7, 3)
    out = layer(x)
    for e in range(4):
        torch.testing.assert_close(out[e], x[e] @ layer.weight[e] + layer.bias[e])


def test_layer_norm_normalises_each_member_with_its_own_gain():
    torch.manual_seed(0)
    mlp = EnsembleMLP(3, 4, 2, hidden_dim=6, num_layers=2, activation="relu", layer_norm=True)
    with torch.no_grad():
        for norm in mlp.norms:
            norm.weight.copy_(torch.rand_like(norm.weight) + 0.5)
            norm.bias.copy_(torch.randn_like(norm.bias))
    x = 10.0 * torch.randn(3, 5, 4) + 3.0
    out = mlp(x)
    for e in range(3):
        h = x[e]
        for layer, norm in zip(mlp.layers[:-1], mlp.norms):
            ln = torch.nn.LayerNorm(6)
            with torch.no_grad():
                ln.weight.copy_(norm.weight[e, 0])
                ln.bias.copy_(norm.bias[e, 0])
            h = torch.relu(ln(h @ layer.weight[e] + layer.bias[e]))
        torch.testing.assert_close(out[e], h @ mlp.layers[-1].weight[e] + mlp.layers[-1].bias[e])
    assert EnsembleMLP(3, 4, 2, 6, 2).norms is None  # off by default: old checkpoints still load


def test_fits_linear_gaussian_with_small_error_and_calibrated_variance(fitted):
    model, _, metrics = fitted
    s, a, r, ns = linear_gaussian(2000, np.random.default_rng(1))
    mean, var = model.predict(torch.as_tensor(s), torch.as_tensor(a))
    target = torch.as_tensor(np.concatenate([ns - s, r[:, None]], axis=1))
    elites = model.elites
    err = mean[elites] - target
    mse = err.square().mean().item()
    assert mse < 2.0 * NOISE_STD ** 2, f"mean squared error {mse} vs noise variance {NOISE_STD ** 2}"
    within = (err.abs() <= 2.0 * var[elites].sqrt()).float().mean().item()
    assert 0.90 <= within <= 0.99, f"{within:.3f} of points within 2 sigma, expected ~0.95"
    predicted_std = var[elites].sqrt().mean().item()
    assert 0.06 < predicted_std < 0.16, predicted_std
    assert all(f"model/holdout_loss/member_{i}" in metrics for i in range(5))


def test_elites_are_the_members_with_lowest_holdout_loss(fitted):
    model, _, metrics = fitted
    losses = np.array([metrics[f"model/holdout_loss/member_{i}"] for i in range(5)])
    assert sorted(model.elites.tolist()) == sorted(np.argsort(losses)[:3].tolist())
    # Spoil one elite: after re-selection on fresh data it must drop out.
    bad = int(model.elites[0])
    with torch.no_grad():
        model.net.layers[-1].bias[bad] += 5.0
    s, a, r, ns = linear_gaussian(500, np.random.default_rng(2))
    inputs = (torch.as_tensor(np.concatenate([s, a], 1)) - model.in_mean) / model.in_std
    targets = (torch.as_tensor(np.concatenate([ns - s, r[:, None]], 1)) - model.out_mean) / model.out_std
    mse = EnsembleTrainer(model, torch.device("cpu")).holdout_mse(inputs, targets)
    assert bad not in torch.argsort(mse)[:3].tolist()
    with torch.no_grad():
        model.net.layers[-1].bias[bad] -= 5.0


def test_logvar_stays_within_learned_bounds(fitted):
    model, _, _ = fitted
    x = torch.randn(5, 100, 5) * 50.0  # far outside the data
    _, logvar = model._forward_normalized(x)
    assert (logvar <= model.max_logvar + 1e-5).all() and (logvar >= model.min_logvar - 1e-5).all()


def test_config_rejects_more_elites_than_members():
    with pytest.raises(ConfigError, match="num_elites"):
        from_dict(DynamicsConfig, {"ensemble_size": 3, "num_elites": 5}, "mbpo.yaml", "model")


def test_outputs_constant_in_the_data_are_predicted_exactly():
    """A goal position in the state never changes: rollouts must not let it drift."""
    rng = np.random.default_rng(3)
    s, a, r, ns = linear_gaussian(400, rng)
    s = np.concatenate([s, np.full((400, 1), 0.7, np.float32)], 1)
    ns = np.concatenate([ns, np.full((400, 1), 0.7, np.float32)], 1)
    model = ProbabilisticEnsemble(4, 2, small_cfg(max_grad_steps=50))
    EnsembleTrainer(model, torch.device("cpu")).fit(s, a, r, ns, rng=rng)
    mean, var = model.predict(torch.as_tensor(s), torch.as_tensor(a))
    assert torch.all(mean[..., 3] == 0) and torch.all(var[..., 3] == 0)
    assert torch.all(var[..., :3] > 0)
