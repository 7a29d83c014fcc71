"""MIP session rules (memnet/net/session.py) without a network: bytes in, typed events out.
Over real streams the same sessions are driven by client.py and server.py (test_mip_server.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memnet.cube import cid
from memnet.errors import FormatError, LimitError, PeerError
from memnet.net import wire
from memnet.net.session import MAX_REQUEST_FRAME, ClientSession, ServerSession

CUBE = cid.cid_of(b"cube")
C1, C2, C3 = (cid.cid_of(bytes([i])) for i in range(3))


def frames(*messages: wire.Message) -> bytes:
    return b"".join(wire.encode_frame(m) for m in messages)


def events(session, data: bytes, step: int | None = None) -> list:
    """Feed data (in pieces of step bytes) and collect every event."""
    out = []
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        session.receive_data(piece)
        while (event := session.next_event()) is not None:
            out.append(event)
    return out


# -- the requester ---------------------------------------------------------------------------------

def test_pipelined_requests_are_numbered_and_answered_in_order():
    s = ClientSession("p")
    r1, f1 = s.get_manifest(CUBE)
    r2, f2 = s.get_chunks(CUBE, [C1, C2])
    r3, f3 = s.get_have(CUBE)
    r4, f4 = s.get_prefix(bytes(32))
    assert (r1, r2, r3, r4) == (1, 2, 3, 4) and s.outstanding == 4
    assert f1 + f2 + f3 + f4 == frames(wire.get_manifest(1, CUBE), wire.get_chunks(2, CUBE, [C1, C2]),
                                       wire.get_have(3, CUBE), wire.get_prefix(4, bytes(32)))
    replies = frames(wire.manifest(1, b"m"), wire.chunk(2, C1, b"one"), wire.missing(2, C2),
                     wire.have(3, b"\x80"), wire.cubes(4, [CUBE]))
    got = events(s, replies, step=7)  # however the bytes are split
    assert [type(e) for e in got] == [wire.ManifestReply, wire.Chunk, wire.Missing, wire.Have, wire.Cubes]
    assert got[1].data == b"one" and s.outstanding == 0
    s.eof()  # a clean end: nothing unanswered


def test_a_chunk_batch_ends_after_its_last_cid():
    s = ClientSession()
    s.get_chunks(CUBE, [C1, C2, C3])
    events(s, frames(wire.chunk(1, C1, b"a")))
    assert s.outstanding == 1
    events(s, frames(wire.missing(1, C2), wire.chunk(1, C3, b"c")))
    assert s.outstanding == 0


def test_an_error_with_the_request_id_ends_that_request_only():
    s = ClientSession()
    s.get_chunks(CUBE, [C1, C2])
    s.get_manifest(CUBE)
    got = events(s, frames(wire.chunk(1, C1, b"a"), wire.error(1, "rate_limited", "slow down"),
                           wire.manifest(2, b"m")))
    assert [type(e) for e in got] == [wire.Chunk, wire.Error, wire.ManifestReply]
    assert got[1].code == "rate_limited" and s.outstanding == 0 and s.broken is None


@pytest.mark.parametrize("requests, replies, words", [
    ([("get_manifest",)], [wire.error(0, "bad_request", "you broke it")], "bad_request: you broke it"),
    ([], [wire.manifest(1, b"m")], "unasked"),
    ([("get_manifest",), ("get_manifest",)], [wire.manifest(2, b"m")], "answered request 2, expected 1"),
    ([("get_manifest",)], [wire.have(1, b"")], "sent have, expected manifest"),
    ([("get_have",)], [wire.manifest(1, b"m")], "sent manifest, expected have"),
    ([("get_chunks", [C1, C2])], [wire.chunk(1, C2, b"x")], "out of order"),
    ([("get_chunks", [C1])], [wire.manifest(1, b"m")], "mid-batch"),
    ([("get_prefix",)], [wire.chunk(1, C1, b"x")], "sent chunk, expected cubes"),
])
def test_replies_out_of_turn_break_the_session(requests, replies, words):
    s = ClientSession("peer-x")
    for request in requests:
        if request[0] == "get_chunks":
            s.get_chunks(CUBE, request[1])
        elif request[0] == "get_prefix":
            s.get_prefix(bytes(32))
        else:
            getattr(s, request[0])(CUBE)
    with pytest.raises(PeerError, match=words):
        events(s, frames(*replies))
    assert s.broken is not None and "peer-x" in s.broken or "bad_request" in s.broken
    with pytest.raises(PeerError, match="broken"):
        s.get_manifest(CUBE)  # nothing more goes out on a broken session


def test_end_of_stream_with_answers_due_or_mid_frame():
    s = ClientSession()
    s.get_manifest(CUBE)
    with pytest.raises(PeerError, match="1 request\\(s\\) unanswered"):
        s.eof()
    s = ClientSession()
    s.get_manifest(CUBE)
    s.receive_data(frames(wire.manifest(1, b"m"))[:-2])
    assert s.next_event() is None and s.pending
    with pytest.raises(PeerError, match="truncated"):
        s.eof()


def test_a_malformed_reply_frame_breaks_the_session():
    s = ClientSession()
    s.get_manifest(CUBE)
    with pytest.raises(PeerError, match="malformed"):
        events(s, b"\x05\xc1\xc1\xc1\xc1\xc1")
    assert s.broken


# -- the responder ----------------------------------------------------------------------------------

def test_requests_come_out_in_order():
    s = ServerSession()
    data = frames(wire.get_manifest(1, CUBE), wire.get_chunks(2, CUBE, [C1]), wire.get_have(3, CUBE),
                  wire.get_prefix(4, bytes(32)))
    assert [type(e) for e in events(s, data, step=3)] == [wire.GetManifest, wire.GetChunks, wire.GetHave,
                                                           wire.GetPrefix]
    s.eof()


@pytest.mark.parametrize("message", [wire.manifest(1, b"m"), wire.chunk(1, C1, b"x"), wire.missing(1, C1),
                                     wire.have(1, b""), wire.cubes(1, []), wire.error(1, "busy", "no")])
def test_anything_but_a_request_is_a_violation_and_ends_the_session(message):
    s = ServerSession()
    with pytest.raises(FormatError, match="not a request") as info:
        events(s, frames(message))
    reply = wire.FrameDecoder()
    reply.feed(s.violation(info.value))
    error = reply.next()
    assert type(error) is wire.Error and error.id == 0 and error.code == "bad_request" and "not a request" in error.message
    s.receive_data(frames(wire.get_manifest(2, CUBE)))  # ignored: nothing is read after a violation
    with pytest.raises(FormatError, match="already ended"):
        s.next_event()


def test_request_frames_are_small():
    s = ServerSession()
    assert MAX_REQUEST_FRAME == 16 * 1024
    with pytest.raises(LimitError):
        events(s, wire.frames.varint(MAX_REQUEST_FRAME + 1))  # refused before any body arrives
    assert s.violated


def test_truncated_request_at_end_of_stream():
    s = ServerSession()
    s.receive_data(frames(wire.get_manifest(1, CUBE))[:-1])
    assert s.next_event() is None
    with pytest.raises(FormatError, match="truncated"):
        s.eof()


# -- both together ----------------------------------------------------------------------------------

requests = st.lists(st.one_of(
    st.just(("manifest",)), st.just(("have",)), st.just(("prefix",)),
    st.lists(st.sampled_from([C1, C2, C3]), min_size=1, max_size=3, unique=True).map(lambda c: ("chunks", c)),
), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(requests, st.integers(1, 50), st.data())
def test_a_responder_answering_in_order_always_satisfies_the_requester(batch, step, data):
    """Whatever is pipelined and however the bytes are split, honest answers (some of them
    errors) are accepted one by one, and the session ends with nothing outstanding."""
    client, server = ClientSession(), ServerSession()
    sent = b""
    for request in batch:
        if request[0] == "chunks":
            sent += client.get_chunks(CUBE, request[1])[1]
        else:
            sent += getattr(client, f"get_{request[0]}")(CUBE if request[0] != "prefix" else bytes(32))[1]
    answers = []
    for request in events(server, sent, step):
        if data.draw(st.booleans(), label="error instead"):
            answers.append(wire.error(request.id, "busy", "later"))
        elif type(request) is wire.GetChunks:
            answers += [wire.chunk(request.id, c, b"x") for c in request.chunks]
        elif type(request) is wire.GetManifest:
            answers.append(wire.manifest(request.id, b"m"))
        elif type(request) is wire.GetHave:
            answers.append(wire.have(request.id, b""))
        else:
            answers.append(wire.cubes(request.id, []))
    got = events(client, frames(*answers), step)
    assert len(got) == len(answers) and client.outstanding == 0
    client.eof()
