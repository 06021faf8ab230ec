"""Episode datasets on disk: one ``.npz`` per episode plus a ``dataset.json``; the one reader.

Why one file per episode: demonstrations and operator recordings are collected on a real arm over
hours, and a crash, a ``kill -9`` or a pulled power cable must never cost earlier episodes. Every
episode is written (by `se_robot.data.writer.EpisodeWriter`) to a hidden temporary name in the
same directory, flushed with ``fsync`` and then hard-linked to its final name (atomic, and it never
overwrites: concurrent recorders each take a free index), so a reader sees either the whole episode
or nothing. Leftover temporary files are ignored by readers and reported by ``check``.

Layout (see docs/ARCHITECTURE.md), for an episode of T steps::

    state         float32 (T+1, D)         proprioception          } the env's observation keys
    task          float32 (T+1, F)         task features           } (se_robot.envs.spaces); at
    pixels        uint8   (T+1, H, W, 3)   the env's raw frames    } least one; extra cameras
                                                                     as pixels_<name>
    action        float32 (T, A)
    reward        float32 (T,)
    terminated    bool    (T,)
    truncated     bool    (T,)
    intervention  bool    (T,)
    timestamp     float64 (T+1,)           seconds (wall clock on hardware, sim time in the twin)
    success       bool    ()
    metadata      str     ()               JSON: arm, calibration, camera, task, control_hz, source

Frames are stored as the camera gives them (H x W x 3), never frame-stacked; loaders that feed
agents convert with this known layout.

Files come from other people and other machines, so reading trusts nothing: every file is read
with ``allow_pickle=False``, and before any array is read its zip directory and ``.npy`` header are
checked against the limits below (a member claiming a 21.8 TiB array, or a 1.5 MB zip bomb that
inflates to GBs, is refused without allocating it); then every array is checked for dtype, shape,
length and finiteness. Errors name the file and the member.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
EPISODE_RE = re.compile(r"^episode_(\d{6,})\.npz$")
TMP_SUFFIX = ".tmp"

#: Uncompressed bytes one episode file may hold in all: ~80,000 frames of 128x128, or ~4,500 of
#: 640x480 (7.5 min at 10 Hz). Raise it here for longer recordings.
MAX_EPISODE_BYTES = 4 << 30
#: Past RATIO_CHECK_BYTES uncompressed, a member (and the whole file) may not inflate more than
#: MAX_COMPRESSION_RATIO times its compressed size: camera frames deflate about 5-50x, a zip bomb ~1000x.
MAX_COMPRESSION_RATIO = 200
RATIO_CHECK_BYTES = 64 << 20

#: vector observation keys an episode may hold, each float32 (T+1, D)
VECTOR_OBS_KEYS = ("state", "task")
#: key -> (dtype, number of dimensions, leading length: "T" or "T+1" or None for a scalar)
_SPEC: dict[str, tuple[np.dtype, int, str | None]] = {
    "action": (np.dtype(np.float32), 2, "T"),
    "reward": (np.dtype(np.float32), 1, "T"),
    "terminated": (np.dtype(bool), 1, "T"),
    "truncated": (np.dtype(bool), 1, "T"),
    "intervention": (np.dtype(bool), 1, "T"),
    "timestamp": (np.dtype(np.float64), 1, "T+1"),
    "success": (np.dtype(bool), 0, None),
}
REQUIRED_KEYS = (*_SPEC, "metadata")


class DatasetError(ValueError):
    """A dataset file is wrong; the message names the file, the key and what is wrong."""

    def __init__(self, path: str | Path, key: str, message: str):
        self.path = str(path)
        self.key = key
        super().__init__(f"{path}: {key}: {message}")


def episode_filename(index: int) -> str:
    return f"episode_{index:06d}.npz"


def is_pixel_key(key: str) -> bool:
    return key == "pixels" or key.startswith("pixels_")


def is_obs_key(key: str) -> bool:
    """Whether ``key`` is an observation array of an episode (state, task, pixels*)."""
    return key in VECTOR_OBS_KEYS or is_pixel_key(key)


# --------------------------------------------------------------------------------------------
# Dataset metadata
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DatasetMeta:
    """The contents of ``dataset.json``: what every episode in the directory shares."""

    task: str
    arm: str = "so101"
    control_hz: float = 10.0
    camera: str = "scene"
    created: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = DATASET_FILE) -> "DatasetMeta":
        if not isinstance(data, Mapping):
            raise DatasetError(source, "<root>", f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if "task" not in data:
            raise DatasetError(source, "task", "missing required key")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise DatasetError(source, "format_version",
                               f"{version!r} is not supported (this se_robot reads <= {FORMAT_VERSION})")
        try:
            control_hz = float(data.get("control_hz", 10.0))
        except (TypeError, ValueError):
            raise DatasetError(source, "control_hz", f"expected a number, got {data['control_hz']!r}") from None
        kwargs = {k: data[k] for k in known if k in data}
        kwargs["control_hz"] = control_hz
        return cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})


def read_dataset_meta(directory: str | Path) -> DatasetMeta:
    path = Path(directory) / DATASET_FILE
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(path, "<file>", "missing: not an se_robot episode dataset") from None
    except json.JSONDecodeError as e:
        raise DatasetError(path, "<file>", f"not valid JSON: {e}") from None
    return DatasetMeta.from_json(data, str(path))


# --------------------------------------------------------------------------------------------
# Reading and validation
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Episode:
    """One loaded episode: arrays by key, plus ``success``, ``metadata`` and ``length`` (T)."""

    path: Path
    arrays: dict[str, np.ndarray]
    success: bool
    metadata: dict[str, Any]

    @property
    def length(self) -> int:
        return int(self.arrays["action"].shape[0])

    @property
    def pixel_keys(self) -> list[str]:
        return sorted(k for k in self.arrays if is_pixel_key(k))

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def observation(self, t: int) -> dict[str, np.ndarray]:
        """The observation at index t (0..T) as the env's dict form (raw frames, not stacked)."""
        return {k: v[t] for k, v in self.arrays.items() if is_obs_key(k)}

    @property
    def obs_keys(self) -> list[str]:
        return sorted(k for k in self.arrays if is_obs_key(k))


def _validate_obs(arrays: Mapping[str, np.ndarray], T: int, path: str | Path) -> None:
    """Observation keys: at least one; vectors float32 (T+1, D), finite; frames uint8 (T+1, H, W, 3)."""
    unknown = sorted(k for k in arrays if k not in REQUIRED_KEYS and not is_obs_key(k))
    if unknown:
        raise DatasetError(path, unknown[0], f"not an episode key (observations: {', '.join(VECTOR_OBS_KEYS)}, "
                                             "pixels, pixels_<camera>)")
    obs_keys = [k for k in arrays if is_obs_key(k)]
    if not obs_keys:
        raise DatasetError(path, "<observation>", "no observation arrays (state, task or pixels)")
    for key in obs_keys:
        a = arrays[key]
        want_dtype, want = (np.dtype(np.uint8), "(T+1, H, W, 3)") if is_pixel_key(key) else \
            (np.dtype(np.float32), "(T+1, D)")
        if a.dtype != want_dtype:
            raise DatasetError(path, key, f"expected dtype {want_dtype}, got {a.dtype}")
        if (a.ndim != 4 or a.shape[-1] != 3) if is_pixel_key(key) else a.ndim != 2:
            raise DatasetError(path, key, f"expected shape {want}, got {a.shape}")
        if a.shape[0] != T + 1:
            raise DatasetError(path, key, f"length {a.shape[0]} does not match T+1 = {T + 1}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise DatasetError(path, key, "contains NaN or infinite values")


def validate_arrays(arrays: Mapping[str, np.ndarray], path: str | Path) -> tuple[bool, dict[str, Any]]:
    """Check keys, dtypes, shapes and lengths; return (success, metadata) or raise DatasetError."""
    for key in REQUIRED_KEYS:
        if key not in arrays:
            raise DatasetError(path, key, f"missing required key (has: {', '.join(sorted(arrays))})")
    action = arrays["action"]
    if action.ndim != 2:
        raise DatasetError(path, "action", f"expected shape (T, A), got {action.shape}")
    T = action.shape[0]
    if T < 1:
        raise DatasetError(path, "action", "episode has no steps (T = 0)")
    lengths = {"T": T, "T+1": T + 1}
    for key, (dtype, ndim, length) in _SPEC.items():
        a = arrays[key]
        if a.dtype != dtype:
            raise DatasetError(path, key, f"expected dtype {dtype}, got {a.dtype}")
        if a.ndim != ndim:
            raise DatasetError(path, key, f"expected {ndim} dimension(s), got shape {a.shape}")
        if length is not None and a.shape[0] != lengths[length]:
            raise DatasetError(path, key, f"length {a.shape[0]} does not match {length} = {lengths[length]} "
                               f"(T from action {action.shape})")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise DatasetError(path, key, "contains NaN or infinite values")
    if np.any(np.diff(arrays["timestamp"]) < 0):
        raise DatasetError(path, "timestamp", "timestamps go backwards")
    _validate_obs(arrays, T, path)
    meta = arrays["metadata"]
    if meta.dtype.kind != "U" or meta.ndim != 0:
        raise DatasetError(path, "metadata",
                           f"expected a JSON string scalar, got dtype {meta.dtype} shape {meta.shape}")
    try:
        metadata = json.loads(str(meta))
    except json.JSONDecodeError as e:
        raise DatasetError(path, "metadata", f"not valid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise DatasetError(path, "metadata", f"expected a JSON object, got {type(metadata).__name__}")
    return bool(arrays["success"]), metadata


def _too_inflated(uncompressed: int, compressed: int) -> bool:
    return uncompressed > RATIO_CHECK_BYTES and uncompressed > MAX_COMPRESSION_RATIO * max(compressed, 1)


def _read_npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f".npy format version {version} (episodes are written as 1.0 or 2.0)")
    return shape, dtype


def check_npz_limits(path: str | Path) -> None:
    """Refuse an ``.npz`` whose members could not be read within the documented limits.

    Reads only the zip directory and each member's ``.npy`` header (a few hundred bytes): member
    names must be episode keys, declared sizes within MAX_EPISODE_BYTES and MAX_COMPRESSION_RATIO,
    no object dtype, and each header's shape x itemsize must equal the bytes the member holds.
    Since zipfile never inflates past a member's declared size, what a later ``np.load`` allocates is
    bounded by what was checked here.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        for info in infos:
            key = info.filename.removesuffix(".npy")
            if key == info.filename or (key not in REQUIRED_KEYS and not is_obs_key(key)):
                raise DatasetError(path, key, "not an episode key (an episode holds only "
                                   f"{', '.join(REQUIRED_KEYS)} and observation .npy members)")
            if _too_inflated(info.file_size, info.compress_size):
                raise DatasetError(path, key, f"inflates {info.file_size / max(info.compress_size, 1):.0f}x "
                                   f"({info.compress_size} -> {info.file_size} bytes), over the "
                                   f"{MAX_COMPRESSION_RATIO}x limit: a zip bomb, not an episode")
        total, packed = sum(i.file_size for i in infos), sum(i.compress_size for i in infos)
        if total > MAX_EPISODE_BYTES:
            raise DatasetError(path, "<file>", f"would inflate to {_size(total)}, over the "
                               f"{_size(MAX_EPISODE_BYTES)} limit (MAX_EPISODE_BYTES)")
        if _too_inflated(total, packed):
            raise DatasetError(path, "<file>", f"inflates {total / max(packed, 1):.0f}x ({packed} -> {total} "
                               f"bytes), over the {MAX_COMPRESSION_RATIO}x limit: a zip bomb, not an episode")
        for info in infos:
            key = info.filename.removesuffix(".npy")
            with zf.open(info) as f:
                try:
                    shape, dtype = _read_npy_header(f)
                except ValueError as e:
                    raise DatasetError(path, key, f"not a valid .npy header: {e}") from None
                if dtype.hasobject:
                    raise DatasetError(path, key, "holds a pickled object, which episodes never do")
                claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                held = info.file_size - f.tell()
                if claimed != held:
                    raise DatasetError(path, key, f"header claims a {dtype} array of shape {shape} "
                                       f"({_size(claimed)}), but the member holds {held} bytes")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**40:.1f} TiB" if nbytes >= 2**40 else f"{nbytes / 2**30:.3g} GiB"


@contextlib.contextmanager
def _open_npz(path: Path) -> Iterator[Any]:
    """``np.load`` without pickles, after `check_npz_limits`; unreadable files raise DatasetError naming the file."""
    try:
        check_npz_limits(path)
        with np.load(path, allow_pickle=False) as npz:
            yield npz
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(path, "<file>", "does not exist") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise DatasetError(path, "<file>", f"not a readable .npz (truncated or corrupt): {e}") from None
    except ValueError as e:
        raise DatasetError(path, "<file>", f"not a readable .npz: {e}") from None


def _member(npz: Any, path: Path, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:   # numpy refuses object arrays without allow_pickle
        raise DatasetError(path, key, f"holds a pickled object, which episodes never do ({e})") from None


def load_episode(path: str | Path) -> Episode:
    """Load and validate every array of one episode file; anything malformed raises DatasetError."""
    path = Path(path)
    with _open_npz(path) as npz:
        arrays = {k: _member(npz, path, k) for k in npz.files}
    success, metadata = validate_arrays(arrays, path)
    return Episode(path=path, arrays=arrays, success=success, metadata=metadata)


def episode_length(path: str | Path) -> int:
    """T of one episode file, reading only its ``action`` array (for sizing buffers before loading)."""
    path = Path(path)
    with _open_npz(path) as npz:
        if "action" not in npz.files:
            raise DatasetError(path, "action", "missing required key")
        action = _member(npz, path, "action")
    if action.ndim != 2 or len(action) < 1:
        raise DatasetError(path, "action", f"expected shape (T, A) with T >= 1, got {action.shape}")
    return int(len(action))


def numbered_episode_files(directory: Path) -> list[tuple[int, Path]]:
    """(index, path) of every episode file in ``directory``, in index order: THE rule for what an episode is.

    Every ``*.npz`` must be named ``episode_NNNNNN.npz``: a stray ``episode_old.npz`` or
    ``episode_1.npz`` raises DatasetError rather than being silently left out (or, worse, silently
    loaded) by one tool and not another. Temporary files of a writer are hidden and not ``.npz``.
    """
    out = []
    for p in directory.iterdir():
        m = EPISODE_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
        elif p.suffix == ".npz" and not p.name.startswith("."):
            raise DatasetError(p, "<file>", "not a numbered episode file (episode_NNNNNN.npz): rename it "
                                            "or move it out of the dataset directory")
    return sorted(out)


def episode_paths(directory: str | Path) -> list[Path]:
    """Episode files in index order (temporary files from an interrupted write are skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(directory, "<dir>", "not a directory")
    return [p for _, p in numbered_episode_files(directory)]


def stray_temp_files(directory: str | Path) -> list[Path]:
    """Temporary files an interrupted writer left behind (harmless, safe to delete)."""
    return sorted(p for p in Path(directory).iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))


def iter_episodes(directory: str | Path) -> Iterator[Episode]:
    """Yield every episode of a dataset in index order, loading (and validating) one at a time."""
    for path in episode_paths(directory):
        yield load_episode(path)
