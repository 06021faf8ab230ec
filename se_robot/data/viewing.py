"""Looking at episodes without a display: mp4 via imageio-ffmpeg, contact sheet via matplotlib Agg."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from se_robot.data.episodes import Episode


def episode_frames(ep: Episode, scale: int = 1) -> np.ndarray:
    """(T+1, H, W*cams, 3) uint8: every camera side by side, upscaled by an integer factor."""
    keys = ep.pixel_keys
    if not keys:
        raise ValueError(f"{ep.path}: episode has no pixel arrays")
    height = max(ep[k].shape[1] for k in keys)
    parts = []
    for k in keys:
        px = ep[k]
        if px.shape[1] != height:  # pad shorter cameras so they stack
            pad = np.zeros((px.shape[0], height - px.shape[1], px.shape[2], 3), np.uint8)
            px = np.concatenate([px, pad], axis=1)
        parts.append(px)
    frames = np.concatenate(parts, axis=2)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    # H.264 wants even sizes
    h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    return np.ascontiguousarray(frames[:, :h, :w])


def write_video(ep: Episode, path: str | Path, fps: float = 10.0, scale: int = 4) -> Path:
    try:
        import imageio.v2 as imageio
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError("writing mp4 needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg") from e
    frames = episode_frames(ep, scale=scale)
    path = Path(path)
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=1, quality=7) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where ``mask`` is True."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def contact_sheet(ep: Episode, path: str | Path, n_frames: int = 8, control_hz: float = 10.0) -> Path:
    """A row of evenly spaced frames over a plot of every action dimension and the reward."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    has_pixels = bool(ep.pixel_keys)
    T = ep.length
    idx = np.unique(np.linspace(0, T, num=max(1, min(n_frames, T + 1))).round().astype(int))
    fig = Figure(figsize=(max(8, 1.6 * len(idx)), 6 if has_pixels else 4), dpi=100)
    if has_pixels:
        grid = fig.add_gridspec(2, len(idx), height_ratios=[1, 1.4])
        frames = episode_frames(ep)
        for col, t in enumerate(idx):
            ax = fig.add_subplot(grid[0, col])
            ax.imshow(frames[t])
            ax.set_title(f"t={t}" + ("*" if t < T and ep["intervention"][t] else ""), fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[1, :])
    else:
        ax = fig.add_subplot(1, 1, 1)
    time_s = np.arange(T) / control_hz
    for d in range(ep["action"].shape[1]):
        ax.plot(time_s, ep["action"][:, d], label=f"action[{d}]", linewidth=1)
    ax.plot(time_s, ep["reward"], "k--", label="reward", linewidth=1)
    for i, (start, stop) in enumerate(_runs(ep["intervention"])):
        ax.axvspan(start / control_hz, stop / control_hz, color="orange", alpha=0.25,
                   label="intervention" if i == 0 else None)
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", fontsize=7, ncol=3)
    outcome = "success" if ep.success else "failure"
    fig.suptitle(f"{Path(ep.path).name}: {T} steps, {outcome}, {ep.metadata.get('source', '')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
