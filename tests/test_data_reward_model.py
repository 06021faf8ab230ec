"""The success classifier file is data, not code: tensors and plain values only, checked on load."""

from __future__ import annotations

import pathlib

import pytest
import torch

from se_robot.data.reward_model import RewardModel, SuccessClassifier, load_reward_model


class _RunsCode:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _saved(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict]:
    path = RewardModel(SuccessClassifier(input_size=16), 0.7, {"task": "push"}).save(
        tmp_path / "clf.pt")
    return path, torch.load(path, weights_only=True)


def test_a_pickle_in_the_classifier_file_is_refused_without_running(tmp_path):
    path, blob = _saved(tmp_path)
    torch.save({**blob, "info": _RunsCode(tmp_path / "pwned")}, path)
    with pytest.raises(ValueError, match=r"clf\.pt: not a readable reward classifier: .*pickled Python objects"):
        load_reward_model(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("change,message", [
    ({"input_size": 10**7}, r"a damaged reward classifier .*input_size 10000000 outside"),
    ({"threshold": float("nan")}, "threshold nan is not a probability"),
    ({"state_dict": {}}, "a damaged reward classifier"),
    ({"nan_weight": True}, "weights hold NaN"),
])
def test_a_damaged_classifier_file_is_refused_naming_it(tmp_path, change, message):
    path, blob = _saved(tmp_path)
    if change.pop("nan_weight", False):
        blob["state_dict"]["head.1.weight"][0, 0] = float("nan")
    torch.save({**blob, **change}, path)
    with pytest.raises(ValueError, match=rf"clf\.pt: {message}"):
        load_reward_model(path)
