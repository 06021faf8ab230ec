"""Byte framing for what actor_node and learner_node exchange over ROS 2 (pure: no rclpy).

Transitions and policy weights travel as ``std_msgs/UInt8MultiArray`` messages whose ``data`` is
one chunk: a fixed 40-byte header followed by a slice of the payload. Chunking keeps every DDS
sample small (large samples fragment badly and a lost fragment loses the whole sample), and the
header lets the receiver reassemble out-of-order or interleaved chunks, drop a message whose
chunks never all arrive, and reject damaged ones by CRC instead of unpickling garbage.

Header (little endian): magic ``b"SERW"``, version u8, kind u8, reserved u16, stream id u32
(random per sender, so a restarted actor is a new stream), sequence u32, chunk index u32,
chunk count u32, payload length u64, payload CRC-32 u32, reserved u32.

Payloads: transitions are a ``.npz`` of flat arrays (``obs/state``, ``action``...; no pickle);
weights are ``torch.save`` bytes loaded with ``weights_only=True`` (tensors and plain containers).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"SERW"
VERSION = 1
KIND_TRANSITIONS = 1
KIND_WEIGHTS = 2
_HEADER = struct.Struct("<4sBBHIIIIQII")
HEADER_BYTES = _HEADER.size


class WireError(ValueError):
    """A chunk or payload is malformed; the message says which field and what was seen."""


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
    chunk = memoryview(chunk).cast("B")
    if len(chunk) < HEADER_BYTES:
        raise WireError(f"chunk of {len(chunk)} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, kind, _, stream_id, seq, index, count, total, crc, _ = _HEADER.unpack(chunk[:HEADER_BYTES])
    if magic != MAGIC:
        raise WireError(f"magic: expected {MAGIC!r}, got {bytes(magic)!r}")
    if version != VERSION:
        raise WireError(f"version: expected {VERSION}, got {version}")
    if kind not in (KIND_TRANSITIONS, KIND_WEIGHTS):
        raise WireError(f"kind: expected 1 (transitions) or 2 (weights), got {kind}")
    if count == 0 or index >= count:
        raise WireError(f"chunk index {index} is outside the chunk count {count}")
    return ChunkHeader(kind, stream_id, seq, index, count, total, crc), chunk[HEADER_BYTES:]


class Reassembler:
    """Collects chunks into payloads; keeps at most ``max_pending`` incomplete messages.

    ``add`` returns ``(header, payload)`` when a message completes, else None. Incomplete
    messages older than the newest completed one of the same stream are dropped (a lost chunk
    must not pin memory forever); ``dropped`` counts them for diagnostics.
    """

    def __init__(self, max_pending: int = 8):
        self.max_pending = max_pending
        self._parts: dict[tuple[int, int, int], dict[int, bytes]] = {}
        self._headers: dict[tuple[int, int, int], ChunkHeader] = {}
        self.dropped = 0
        self.corrupt = 0

    def add(self, chunk: bytes | bytearray | memoryview) -> tuple[ChunkHeader, bytes] | None:
        header, body = parse(chunk)
        key = (header.kind, header.stream_id, header.seq)
        known = self._headers.setdefault(key, header)
        if (known.count, known.total_bytes, known.crc32) != (header.count, header.total_bytes, header.crc32):
            raise WireError(f"chunk {header.index} of message {header.seq} disagrees with its earlier chunks")
        self._parts.setdefault(key, {})[header.index] = bytes(body)
        parts = self._parts[key]
        if len(parts) < header.count:
            self._evict()
            return None
        payload = b"".join(parts[i] for i in range(header.count))
        del self._parts[key], self._headers[key]
        for old in [k for k in self._parts if k[:2] == key[:2] and k[2] < key[2]]:
            del self._parts[old], self._headers[old]
            self.dropped += 1
        if len(payload) != header.total_bytes or zlib.crc32(payload) != header.crc32:
            self.corrupt += 1
            raise WireError(f"message {header.seq}: payload length/CRC mismatch "
                            f"({len(payload)} bytes, expected {header.total_bytes})")
        return header, payload

    def _evict(self) -> None:
        while len(self._parts) > self.max_pending:
            oldest = min(self._parts, key=lambda k: k[2])
            del self._parts[oldest], self._headers[oldest]
            self.dropped += 1


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


def decode_arrays(payload: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_arrays`."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            flat = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as e:
        raise WireError(f"transition payload is not a valid .npz: {e}") from None
    tree: dict[str, Any] = {}
    for key, arr in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = arr
    return tree


def encode_weights(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def decode_weights(payload: bytes) -> dict[str, Any]:
    import torch

    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types (UnpicklingError, RuntimeError, ...)
        raise WireError(f"weights payload could not be loaded safely: {type(e).__name__}: {e}") from None
