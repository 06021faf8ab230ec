"""A learned success detector on camera frames, trained from recorded episodes.

Why: on the real arm nothing tells the agent that the cube reached the target; the operator's
success/failure marks do. Following SERL/HIL-SERL, a small binary classifier is trained on frames
from recordings: the last ``positive_frames`` frames of successful episodes are positives, every
other frame (earlier frames of successes and all frames of failures) is a negative, so negatives
outnumber positives. Episodes are split into train and held-out sets *by episode* so that nearly
identical neighbouring frames cannot leak across the split. The decision threshold is chosen on
the held-out negatives for a target false-positive rate, because a false success teaches the
agent to stop short, which is worse than a missed one.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from se_robot.data.episodes import Episode


#: the largest classifier input side a saved file may ask for (its first dense layer grows with its square)
MAX_INPUT_SIZE = 1024


class SuccessClassifier(nn.Module):
    """uint8 (B, H, W, 3) frames -> success logits (B,). Resizes to ``input_size`` inside, so the
    same weights take 84x84 training frames and any camera size at run time."""

    def __init__(self, input_size: int = 64, channels: int = 32, hidden: int = 128):
        super().__init__()
        self.input_size = input_size
        c = channels
        self.conv = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
        )
        side = input_size
        for _ in range(4):
            side = (side + 1) // 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * c * side * side, hidden), nn.ReLU(),
                                  nn.Dropout(0.2), nn.Linear(hidden, 1))

    def preprocess(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        x = frames_uint8.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return x

    def forward(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.preprocess(frames_uint8))).squeeze(-1)


# --------------------------------------------------------------------------------------------
# Labelled frames
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LabelledFrames:
    frames: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # float32 (N,) 1 = success
    episode: np.ndarray  # int (N,) index of the source episode

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> "LabelledFrames":
        return LabelledFrames(self.frames[mask], self.labels[mask], self.episode[mask])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())


def label_frames(episodes: Iterable[Episode], positive_frames: int = 2, key: str = "pixels") -> LabelledFrames:
    """Last ``positive_frames`` frames of successful episodes = 1, all other frames = 0."""
    frames, labels, ids = [], [], []
    for i, ep in enumerate(episodes):
        if key not in ep:
            raise ValueError(f"{ep.path}: no {key!r} frames; record with --obs-mode both or pixels")
        px = ep[key]
        y = np.zeros(len(px), np.float32)
        if ep.success:
            y[-positive_frames:] = 1.0
        frames.append(px)
        labels.append(y)
        ids.append(np.full(len(px), i))
    if not frames:
        raise ValueError("no episodes to label")
    return LabelledFrames(np.concatenate(frames), np.concatenate(labels), np.concatenate(ids))


def split_by_episode(data: LabelledFrames, successes: list[bool], holdout: float = 0.2,
                     seed: int = 0) -> tuple[LabelledFrames, LabelledFrames]:
    """Hold out a fraction of successful and of failed episodes each (stratified), whole episodes."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for flag in (True, False):
        group = [i for i, s in enumerate(successes) if s == flag]
        rng.shuffle(group)
        n = int(round(holdout * len(group)))
        if len(group) >= 2:
            n = min(max(n, 1), len(group) - 1)
        held.extend(group[:n])
    mask = np.isin(data.episode, held)
    return data.subset(~mask), data.subset(mask)


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------

def _random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """DrQ's augmentation on uint8 (B, H, W, 3): pad by replication, crop back at a random offset."""
    b, h, w, _ = x.shape
    padded = F.pad(x.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate").permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen) + torch.arange(h)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen) + torch.arange(w)
    out = padded[torch.arange(b)[:, None, None], dy[:, :, None], dx[:, None, :]]
    return out.to(torch.uint8)


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, size, size, 3) by area averaging, once, before training."""
    out = []
    for i in range(0, len(frames), 512):
        x = torch.as_tensor(frames[i:i + 512]).permute(0, 3, 1, 2).float()
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out) if out else torch.zeros((0, size, size, 3), dtype=torch.uint8)


@torch.no_grad()
def predict_proba(model: SuccessClassifier, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(frames), batch_size):
        out.append(torch.sigmoid(model(torch.as_tensor(frames[i:i + batch_size]))).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, false-positive rate (of negatives called success), false-negative rate."""
    pred = scores >= threshold
    pos, neg = labels > 0.5, labels <= 0.5
    fp = int(np.sum(pred & neg))
    fn = int(np.sum(~pred & pos))
    return {"accuracy": float(np.mean(pred == pos)) if len(labels) else float("nan"),
            "fpr": fp / max(int(neg.sum()), 1), "fnr": fn / max(int(pos.sum()), 1),
            "false_positives": fp, "false_negatives": fn, "positives": int(pos.sum()), "negatives": int(neg.sum())}


def choose_threshold(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on ``labels``' negatives is <= ``target_fpr``."""
    neg = np.sort(scores[labels <= 0.5])
    if len(neg) == 0:
        return 0.5
    allowed = int(np.floor(target_fpr * len(neg)))  # negatives that may score at or above it
    idx = len(neg) - allowed - 1  # highest negative that must fall below the threshold
    if idx < 0:
        return float(np.nextafter(np.float32(0.0), np.float32(1.0)))
    return float(np.nextafter(np.float32(neg[idx]), np.float32(2.0)))


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    input_size: int = 64
    shift_pad: int = 3
    positive_fraction: float = 0.25  # share of positives in each batch (oversampled)
    seed: int = 0


def train_classifier(train: LabelledFrames, cfg: TrainConfig = TrainConfig(),
                     log: Any = print) -> SuccessClassifier:
    """BCE on batches with ``positive_fraction`` positives (the rare class is oversampled, so
    every batch sees some) and random-shift augmentation against memorising the few positives."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SuccessClassifier(input_size=cfg.input_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    frames = resize_frames(train.frames, cfg.input_size)
    labels = torch.as_tensor(train.labels)
    pos_idx = torch.nonzero(labels > 0.5).squeeze(-1)
    neg_idx = torch.nonzero(labels <= 0.5).squeeze(-1)
    n_pos_batch = max(1, int(round(cfg.positive_fraction * cfg.batch_size))) if len(pos_idx) else 0
    n_neg_batch = cfg.batch_size - n_pos_batch
    steps_per_epoch = max(1, len(neg_idx) // max(n_neg_batch, 1))
    for epoch in range(cfg.epochs):
        model.train()
        neg_order = neg_idx[torch.randperm(len(neg_idx), generator=gen)]
        total = 0.0
        for step in range(steps_per_epoch):
            negs = neg_order[step * n_neg_batch:(step + 1) * n_neg_batch]
            poss = pos_idx[torch.randint(0, len(pos_idx), (n_pos_batch,), generator=gen)] if n_pos_batch else negs[:0]
            idx = torch.cat([negs, poss])
            x = frames[idx]
            if cfg.shift_pad > 0:
                x = _random_shift(x, cfg.shift_pad, gen)
            loss = F.binary_cross_entropy_with_logits(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / steps_per_epoch:.4f}")
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Saved classifiers
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RewardModel:
    """A trained classifier with its decision threshold, as the reward wrapper uses it."""

    model: SuccessClassifier
    threshold: float
    info: dict[str, Any]

    def probability(self, frames: np.ndarray) -> np.ndarray:
        """Success probability for uint8 frames (N, H, W, 3) or one frame (H, W, 3)."""
        frames = np.asarray(frames)
        single = frames.ndim == 3
        p = predict_proba(self.model, frames[None] if single else frames)
        return p[0] if single else p

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": "se_robot.reward_classifier/1", "state_dict": self.model.state_dict(),
                    "input_size": self.model.input_size, "threshold": self.threshold, "info": self.info}, path)
        return path


def load_reward_model(path: str | Path) -> RewardModel:
    """A classifier written by `RewardModel.save`: tensors and plain values only, checked; errors name the file."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: reward classifier file does not exist") from None
    except pickle.UnpicklingError:   # torch's own message suggests loading it unsafely: not ours to repeat
        raise ValueError(f"{path}: not a readable reward classifier: not only tensors and plain values (corrupt, "
                         "or pickled Python objects, refused since loading them would run code)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"{path}: not a readable reward classifier ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != "se_robot.reward_classifier/1":
        raise ValueError(f"{path}: not an se_robot reward classifier (from `se-robot reward train`)")
    try:
        input_size = int(blob["input_size"])
        if not 4 <= input_size <= MAX_INPUT_SIZE:   # sizes the network: checked before allocating it
            raise ValueError(f"input_size {input_size} outside [4, {MAX_INPUT_SIZE}]")
        model = SuccessClassifier(input_size=input_size)
        model.load_state_dict(blob["state_dict"])
        threshold, info = float(blob["threshold"]), dict(blob.get("info", {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: a damaged reward classifier ({type(e).__name__}: {e})") from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{path}: threshold {threshold} is not a probability in [0, 1]")
    if not all(torch.isfinite(t).all() for t in model.state_dict().values()):
        raise ValueError(f"{path}: weights hold NaN or infinite values")
    model.eval()
    return RewardModel(model, threshold, info)
