"""Byte framing for what actor_node and learner_node exchange over ROS 2 (pure: no rclpy).

Transitions and policy weights travel as ``std_msgs/UInt8MultiArray`` messages whose ``data`` is
one chunk: a fixed 40-byte header followed by a slice of the payload. Chunking keeps every DDS
sample small (large samples fragment badly and a lost fragment loses the whole sample), and the
header lets the receiver reassemble out-of-order or interleaved chunks, drop a message whose
chunks never all arrive, and reject damaged ones by CRC instead of decoding garbage.

Header (little endian): magic ``b"SERW"``, version u8, kind u8, reserved u16, stream id u32
(random per sender, so a restarted actor is a new stream), sequence u32, chunk index u32,
chunk count u32, payload length u64, payload CRC-32 u32, reserved u32.

Everything that arrives is hostile until checked: the :class:`Reassembler` bounds what it holds
(chunks per message, bytes per message, bytes in flight, age of a partial message) and counts
every chunk it refuses in ``rejected`` by reason; nothing here raises past the caller except
:class:`WireError`.

Payloads are data, never code: transitions are a ``.npz`` of flat arrays loaded with
``allow_pickle=False``; weights are ``torch.save`` bytes loaded with ``weights_only=True``
(tensors and plain containers) and checked finite.
"""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MAGIC = b"SERW"
VERSION = 1
KIND_TRANSITIONS = 1
KIND_WEIGHTS = 2
_HEADER = struct.Struct("<4sBBHIIIIQII")
HEADER_BYTES = _HEADER.size


class WireError(ValueError):
    """A chunk or payload is malformed. ``reason`` is the counter it goes to; the message says more."""

    def __init__(self, message: str, reason: str = "malformed"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ChunkHeader:
    kind: int
    stream_id: int
    seq: int
    index: int
    count: int
    total_bytes: int
    crc32: int


def split(kind: int, stream_id: int, seq: int, payload: bytes, chunk_bytes: int) -> list[bytes]:
    """Cut ``payload`` into chunks of at most ``chunk_bytes`` (header included)."""
    room = chunk_bytes - HEADER_BYTES
    if room <= 0:
        raise WireError(f"chunk_bytes {chunk_bytes} must exceed the {HEADER_BYTES}-byte header")
    count = max(1, -(-len(payload) // room))
    crc = zlib.crc32(payload)
    view = memoryview(payload)
    return [_HEADER.pack(MAGIC, VERSION, kind, 0, stream_id & 0xFFFFFFFF, seq & 0xFFFFFFFF, i, count,
                         len(payload), crc, 0) + bytes(view[i * room:(i + 1) * room])
            for i in range(count)]


def parse(chunk: bytes | bytearray | memoryview) -> tuple[ChunkHeader, memoryview]:
    """Header and body of one chunk; raises :class:`WireError` naming the bad field."""
    chunk = memoryview(bytes(chunk) if isinstance(chunk, (list, tuple)) else chunk).cast("B")
    if len(chunk) < HEADER_BYTES:
        raise WireError(f"chunk of {len(chunk)} bytes is shorter than the {HEADER_BYTES}-byte header", "short")
    magic, version, kind, _, stream_id, seq, index, count, total, crc, _ = _HEADER.unpack(chunk[:HEADER_BYTES])
    if magic != MAGIC:
        raise WireError(f"magic: expected {MAGIC!r}, got {bytes(magic)!r}", "bad_header")
    if version != VERSION:
        raise WireError(f"version: expected {VERSION}, got {version}", "bad_header")
    if kind not in (KIND_TRANSITIONS, KIND_WEIGHTS):
        raise WireError(f"kind: expected 1 (transitions) or 2 (weights), got {kind}", "bad_header")
    if count == 0 or index >= count:
        raise WireError(f"chunk index {index} is outside the chunk count {count}", "bad_header")
    return ChunkHeader(kind, stream_id, seq, index, count, total, crc), chunk[HEADER_BYTES:]


@dataclass
class _Partial:
    header: ChunkHeader
    parts: dict[int, bytes]
    held_bytes: int
    born_s: float


class Reassembler:
    """Collects chunks into payloads, within fixed bounds, counting every chunk it refuses.

    ``add`` returns ``(header, payload)`` when a message completes, else None, and raises
    :class:`WireError` (with its ``reason``, also counted in ``rejected``) for a chunk it refuses:
    a bad header, a message over ``max_chunks`` or ``max_message_bytes``, a chunk that disagrees
    with its message's earlier chunks, a chunk of a message already delivered (``duplicate``), or
    a payload failing its length/CRC. Partial messages are dropped (counted in ``dropped`` by
    reason) when older than ``max_age_s``, when a later message of their stream completes, and
    oldest first while more than ``max_pending`` messages or ``max_bytes_in_flight`` bytes are held.
    """

    def __init__(self, max_pending: int = 8, max_chunks: int = 4096, max_message_bytes: int = 64 << 20,
                 max_bytes_in_flight: int = 128 << 20, max_age_s: float = 30.0, max_streams: int = 256,
                 clock: Callable[[], float] = time.monotonic):
        self.max_pending, self.max_chunks, self.max_message_bytes = max_pending, max_chunks, max_message_bytes
        self.max_bytes_in_flight, self.max_age_s, self.max_streams = max_bytes_in_flight, max_age_s, max_streams
        self._clock = clock
        self._pending: dict[tuple[int, int, int], _Partial] = {}
        self._delivered: dict[tuple[int, int], int] = {}   # (kind, stream) -> newest delivered seq
        self.bytes_in_flight = 0
        self.rejected: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.delivered = 0

    def add(self, chunk: bytes | bytearray | memoryview) -> tuple[ChunkHeader, bytes] | None:
        try:
            return self._add(chunk)
        except WireError as e:
            self.rejected[e.reason] += 1
            raise

    def _add(self, chunk: bytes | bytearray | memoryview) -> tuple[ChunkHeader, bytes] | None:
        now = self._clock()
        self._expire(now)
        h, body = parse(chunk)
        if h.count > self.max_chunks:
            raise WireError(f"message {h.seq}: {h.count} chunks, more than the {self.max_chunks} allowed",
                            "too_many_chunks")
        if h.total_bytes > self.max_message_bytes:
            raise WireError(f"message {h.seq}: {h.total_bytes} bytes, more than the {self.max_message_bytes} "
                            "allowed", "too_large")
        stream = (h.kind, h.stream_id)
        if stream in self._delivered and h.seq <= self._delivered[stream]:
            raise WireError(f"message {h.seq} of stream {h.stream_id:08x} was already delivered or superseded",
                            "duplicate")
        key = (h.kind, h.stream_id, h.seq)
        part = self._pending.get(key)
        if part is None:
            part = self._pending[key] = _Partial(h, {}, 0, now)
        known = part.header
        if (known.count, known.total_bytes, known.crc32) != (h.count, h.total_bytes, h.crc32):
            raise WireError(f"chunk {h.index} of message {h.seq} disagrees with its earlier chunks", "inconsistent")
        if h.index in part.parts:
            raise WireError(f"chunk {h.index} of message {h.seq} arrived twice", "duplicate")
        if part.held_bytes + len(body) > h.total_bytes:
            self._drop(key, "inconsistent")
            raise WireError(f"message {h.seq}: chunks hold more than its {h.total_bytes} bytes", "inconsistent")
        part.parts[h.index] = bytes(body)
        part.held_bytes += len(body)
        self.bytes_in_flight += len(body)
        if len(part.parts) < h.count:
            self._evict(keep=key)
            return None
        payload = b"".join(part.parts[i] for i in range(h.count))
        self._drop(key, None)
        self._mark_delivered(stream, h.seq)
        if len(payload) != h.total_bytes or zlib.crc32(payload) != h.crc32:
            raise WireError(f"message {h.seq}: payload length/CRC mismatch ({len(payload)} bytes, expected "
                            f"{h.total_bytes})", "corrupt")
        self.delivered += 1
        return h, payload

    def _mark_delivered(self, stream: tuple[int, int], seq: int) -> None:
        self._delivered.pop(stream, None)   # re-insert: dict order is least recently delivered first
        self._delivered[stream] = seq
        while len(self._delivered) > self.max_streams:
            del self._delivered[next(iter(self._delivered))]
        for old in [k for k in self._pending if k[:2] == stream and k[2] < seq]:
            self._drop(old, "superseded")

    def _drop(self, key: tuple[int, int, int], reason: str | None) -> None:
        part = self._pending.pop(key)
        self.bytes_in_flight -= part.held_bytes
        if reason is not None:
            self.dropped[reason] += 1

    def _expire(self, now: float) -> None:
        for key in [k for k, p in self._pending.items() if now - p.born_s > self.max_age_s]:
            self._drop(key, "expired")

    def _evict(self, keep: tuple[int, int, int]) -> None:
        while len(self._pending) > self.max_pending or self.bytes_in_flight > self.max_bytes_in_flight:
            oldest = min(self._pending, key=lambda k: self._pending[k].born_s)
            self._drop(oldest, "evicted")
            if oldest == keep:
                return


# ------------------------------------------------------------------------------------------------
# Payloads
# ------------------------------------------------------------------------------------------------
def _flatten(tree: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(tree, dict):
        for k, v in tree.items():
            if "/" in str(k):
                raise WireError(f"key {prefix}{k!r} contains '/', which separates nested keys")
            _flatten(v, f"{prefix}{k}/", out)
    else:
        out[prefix[:-1]] = np.asarray(tree)


def encode_arrays(tree: dict[str, Any]) -> bytes:
    """A nested dict of arrays as ``.npz`` bytes (keys joined with ``/``; no pickle)."""
    flat: dict[str, np.ndarray] = {}
    _flatten(tree, "", flat)
    for key, arr in flat.items():
        if arr.dtype == object:
            raise WireError(f"{key}: object arrays cannot be sent (dtype=object)")
    buf = io.BytesIO()
    np.savez(buf, **flat)
    return buf.getvalue()


def decode_arrays(payload: bytes, max_members: int = 64, max_member_bytes: int = 64 << 20) -> dict[str, Any]:
    """Inverse of :func:`encode_arrays`; any damage (bad zip, inner CRC, pickled member, a member
    larger than ``max_member_bytes`` uncompressed) is a :class:`WireError`, never another exception."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise WireError(f"transition payload has {len(infos)} members (at most {max_members})", "too_large")
            big = [i.filename for i in infos if i.file_size > max_member_bytes]
            if big:
                raise WireError(f"transition payload member {big[0]} exceeds {max_member_bytes} bytes", "too_large")
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            flat = {k: npz[k] for k in npz.files}
    except WireError:
        raise
    except (ValueError, OSError, EOFError, KeyError, RuntimeError, zipfile.BadZipFile, zlib.error,
            struct.error) as e:   # RuntimeError: a member flagged encrypted; NotImplementedError is one too
        raise WireError(f"transition payload is not a valid .npz: {type(e).__name__}: {e}", "bad_payload") from None
    tree: dict[str, Any] = {}
    for key, arr in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise WireError(f"key {key} nests under an array", "bad_payload")
        if leaf in node:
            raise WireError(f"key {key} is both an array and a group", "bad_payload")
        node[leaf] = arr
    return tree


def encode_weights(state: dict[str, Any], version: int, step: int) -> bytes:
    """The agent's ``state_dict`` with its version and the learner step that produced it."""
    import torch

    buf = io.BytesIO()
    torch.save({"version": int(version), "step": int(step), "state": state}, buf)
    return buf.getvalue()


def decode_weights(payload: bytes) -> tuple[int, int, dict[str, Any]]:
    """``(version, step, state_dict)``, loaded with ``weights_only=True`` and checked: every float
    tensor finite. A :class:`WireError` for anything else."""
    import torch

    try:
        msg = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types (UnpicklingError, RuntimeError, ...)
        raise WireError(f"weights payload could not be loaded safely: {type(e).__name__}: {e}",
                        "bad_payload") from None
    if not (isinstance(msg, dict) and isinstance(msg.get("version"), int) and isinstance(msg.get("step"), int)
            and isinstance(msg.get("state"), dict)):
        raise WireError("weights payload is not {version: int, step: int, state: dict}", "bad_payload")
    bad = _first_nonfinite(msg["state"], "state")
    if bad:
        raise WireError(f"weights payload: {bad} holds NaN or inf", "nonfinite")
    return msg["version"], msg["step"], msg["state"]


def _first_nonfinite(tree: Any, path: str) -> str | None:
    import torch

    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    elif isinstance(tree, torch.Tensor):
        return path if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
    elif isinstance(tree, float):
        return path if not np.isfinite(tree) else None
    else:
        return None
    for k, v in items:
        found = _first_nonfinite(v, f"{path}/{k}")
        if found:
            return found
    return None
