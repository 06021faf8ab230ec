"""The actor/learner wire and per-actor assembly against hostile input (pure: no DDS).

Each case the issue lists is here: interleaved actors (``add() before add_first()``), a batch
that starts mid-episode or lacks ``start``, wrong shapes, NaN rewards, a 1-wide action, an
inner-CRC failure (``BadZipFile``), a chunk count of 2**32-1, unbounded partial messages and a
re-sent chunk set. Every one is refused and counted; none raises anything but ``WireError``.
"""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from se_robot.agents.replay import ReplayBuffer
from se_robot.nodes import wire
from se_robot.nodes.assembly import BatchSpec, EpisodeAssembler, validate_batch

SPEC = BatchSpec({"state": ((3,), np.dtype(np.float32))}, action_dim=4)


def make_batch(n: int, start: bool = True, end: bool = True, offset: float = 0.0) -> dict:
    """n consecutive steps of one episode: begins with a start (or mid-episode), ends terminal (or not)."""
    batch = {"action": np.zeros((n, 4), np.float32), "reward": np.full(n, 0.5, np.float32),
             "terminated": np.zeros(n, bool), "truncated": np.zeros(n, bool), "start": np.zeros(n, bool),
             "next_obs": {"state": (offset + np.arange(3 * n, dtype=np.float32)).reshape(n, 3)},
             "weights_version": np.int64(3)}
    batch["truncated"][-1] = end
    if start:
        batch["start"][0] = True
        batch["first"] = {"state": np.full((1, 3), offset, np.float32)}
    return batch


def roundtrip(batch: dict) -> dict:
    return wire.decode_arrays(wire.encode_arrays(batch))


def assembler() -> tuple[EpisodeAssembler, ReplayBuffer]:
    replay = ReplayBuffer(capacity=1000, n_step=1)
    return EpisodeAssembler(replay, SPEC, max_actors=4, max_episode_steps=50), replay


# ------------------------------------------------------------------ assembly
def test_interleaved_actors_never_mix_episodes():
    asm, replay = assembler()
    # two actors, each sending one episode in two batches, interleaved on the wire
    a1, a2 = make_batch(3, start=True, end=False, offset=0), make_batch(2, start=False, end=True, offset=10)
    b1, b2 = make_batch(3, start=True, end=False, offset=100), make_batch(2, start=False, end=True, offset=110)
    for actor, seq, batch in [(1, 1, a1), (2, 1, b1), (1, 2, a2), (2, 2, b2)]:
        asm.add(actor, seq, roundtrip(batch))
    assert (asm.transitions, asm.episodes, replay.transitions, replay.episodes) == (10, 2, 10, 2)
    assert asm.weights_versions == {1: 3, 2: 3} and not asm.rejected


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: b.pop("start"), "malformed"),
    (lambda b: b.update(reward=np.array([np.nan, 0, 0], np.float32)), "nonfinite"),
    (lambda b: b.update(action=np.zeros((3, 1), np.float32)), "bad_shape"),     # a 1-wide action
    (lambda b: b.update(action=np.zeros((3, 4), np.float64)), "bad_shape"),
    (lambda b: b["next_obs"].update(state=np.zeros((3, 5), np.float32)), "bad_shape"),
    (lambda b: b["next_obs"].update(state=np.full((3, 3), np.inf, np.float32)), "nonfinite"),
    (lambda b: b["next_obs"].update(extra=np.zeros((3, 1), np.float32)), "malformed"),
    (lambda b: b.pop("first"), "malformed"),
    (lambda b: b.update(reward=np.zeros(0, np.float32)), "bad_shape"),
    (lambda b: b.update(start=np.array([True, True, False])), "bad_shape"),   # two starts, one first
    (lambda b: b.update(terminated=np.array([True, False, False])), "episode_order"),
    (lambda b: b.update(weights_version=np.float32(1.5)), "malformed"),
    (lambda b: b.update(extra=np.zeros(3)), "malformed"),
])
def test_a_malformed_batch_is_refused_and_counted(mutate, reason):
    asm, replay = assembler()
    batch = make_batch(3)
    mutate(batch)
    with pytest.raises(wire.WireError):
        asm.add(1, 1, batch)
    assert asm.rejected == {reason: 1} and replay.transitions == 0
    asm.add(1, 2, make_batch(3))        # the learner goes on
    assert replay.transitions == 3


def test_sequence_numbers_refuse_duplicates_and_drop_episodes_with_a_gap():
    asm, replay = assembler()
    with pytest.raises(wire.WireError, match="mid-episode"):
        asm.add(1, 1, make_batch(2, start=False))      # a first batch that starts mid-episode
    asm.add(2, 5, make_batch(2, end=False))
    with pytest.raises(wire.WireError, match="already received"):
        asm.add(2, 5, make_batch(2, end=False))         # duplicate
    with pytest.raises(wire.WireError, match="dropped"):
        asm.add(2, 7, make_batch(2, start=False))      # batch 6 lost: the episode goes, this tail too
    asm.add(2, 8, make_batch(2))
    assert asm.rejected == {"mid_episode": 2, "duplicate": 1, "gap": 1}
    assert asm.dropped_episodes == {"gap": 1} and replay.transitions == 2


def test_assembly_memory_is_bounded():
    asm, replay = assembler()
    for seq in range(1, 30):                         # an episode that never ends
        try:
            asm.add(1, seq, make_batch(5, start=seq == 1, end=False))
        except wire.WireError:                       # its tail, once the episode was dropped
            pass
    assert asm.open_steps <= 50 and asm.dropped_episodes["too_long"] == 1 and asm.rejected["mid_episode"] == 18
    for actor in range(10, 20):                     # more actors than max_actors
        asm.add(actor, 1, make_batch(2, end=False))
    assert len(asm._actors) <= 4 and asm.dropped_episodes["actor_evicted"] >= 6


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(1, 6), st.booleans(), st.booleans()),
                max_size=40))
def test_any_stream_of_batches_only_stores_whole_episodes(events):
    """Random actors, sequence numbers, starts and ends: never an exception but WireError,
    and replay only ever holds complete episodes."""
    asm, replay = assembler()
    for actor, seq, n, start, end in events:
        try:
            asm.add(actor, seq, make_batch(n, start=start, end=end))
        except wire.WireError:
            pass
    assert replay.transitions == asm.transitions and not replay._open


# ------------------------------------------------------------------ reassembly
def test_reassembly_refuses_and_counts_hostile_chunks():
    r = wire.Reassembler(max_pending=2, max_chunks=100, max_message_bytes=10_000, max_bytes_in_flight=5_000)
    huge = struct.pack("<4sBBHIIIIQII", wire.MAGIC, wire.VERSION, 1, 0, 7, 1, 0, 2**32 - 1, 10, 0, 0) + b"x"
    for chunk, reason in [(huge, "too_many_chunks"), (b"short", "short"), (b"XXXX" + bytes(40), "bad_header")]:
        with pytest.raises(wire.WireError):
            r.add(chunk)
        assert r.rejected[reason] == 1
    chunks = wire.split(1, 9, 1, bytes(range(256)) * 4, 128)
    for c in chunks:
        done = r.add(c)
    assert done is not None and done[1] == bytes(range(256)) * 4
    with pytest.raises(wire.WireError):               # the same chunk set re-sent: never ingested twice
        r.add(chunks[0])
    assert r.rejected["duplicate"] == 1 and r.delivered == 1


def test_reassembly_holds_bounded_bytes_and_drops_old_partials():
    clock = [0.0]
    r = wire.Reassembler(max_pending=100, max_chunks=1000, max_message_bytes=1 << 20,
                         max_bytes_in_flight=50_000, max_age_s=10.0, clock=lambda: clock[0])
    for seq in range(1, 9):                           # 8 messages x 800 chunks, none complete
        for c in wire.split(1, seq, seq, bytes(800 * 100), 140)[:-1]:
            r.add(c)
            assert r.bytes_in_flight <= 50_000
    assert r.dropped["evicted"] > 0
    clock[0] = 100.0
    r.add(wire.split(1, 99, 1, bytes(1000), 140)[0])  # anything arriving expires the stale ones
    assert r.dropped["expired"] >= 1 and r.bytes_in_flight <= 1000


def test_a_corrupt_payload_is_counted_not_raised_past_wire_error():
    payload = bytearray(wire.encode_arrays(make_batch(3)))
    chunks = wire.split(1, 1, 1, bytes(payload), 1 << 16)
    flipped = bytearray(chunks[0])
    flipped[-20] ^= 0xFF
    r = wire.Reassembler()
    with pytest.raises(wire.WireError):
        r.add(bytes(flipped))
    assert r.rejected["corrupt"] == 1


def test_a_payload_with_a_bad_inner_crc_is_a_wire_error():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with zf.open("reward.npy", "w") as f:
            np.save(f, np.zeros(64, np.float32))
    data = bytearray(buf.getvalue())
    data[100] ^= 0xFF                                  # inside the stored member: its CRC no longer matches
    with pytest.raises(wire.WireError):
        wire.decode_arrays(bytes(data))


def test_pickled_members_and_planted_weights_are_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(zbuf := io.BytesIO(), "w") as zf:
        zf.writestr("reward.npy", buf.getvalue())
    with pytest.raises(wire.WireError):
        wire.decode_arrays(zbuf.getvalue())
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(wire.WireError):
        wire.decode_weights(pickle.dumps({"version": 1, "step": 0, "state": Boom()}))


def test_weights_carry_a_version_and_nan_weights_are_refused():
    import torch

    version, step, state = wire.decode_weights(wire.encode_weights({"w": torch.ones(2)}, 4, 120))
    assert (version, step, state["w"].tolist()) == (4, 120, [1.0, 1.0])
    with pytest.raises(wire.WireError, match="NaN"):
        wire.decode_weights(wire.encode_weights({"opt": {"w": torch.tensor([float("nan")])}}, 5, 0))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_wire_error(data):
    r = wire.Reassembler()
    for blob in (data, wire.split(1, 1, 1, data, 64)[0][:wire.HEADER_BYTES] + data):
        try:
            r.add(blob)
        except wire.WireError:
            pass
    try:
        validate_batch(wire.decode_arrays(data), SPEC)
    except wire.WireError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(wire.encode_arrays(make_batch(2))) - 1), st.integers(1, 255))
def test_any_flipped_byte_in_a_batch_is_a_wire_error_or_a_valid_batch(pos, xor):
    data = bytearray(wire.encode_arrays(make_batch(2)))
    data[pos] ^= xor
    try:
        validate_batch(wire.decode_arrays(bytes(data)), SPEC)
    except wire.WireError:
        pass
