"""The Phoenix wire protocol, byte for byte: frames in, events and frames out."""

from __future__ import annotations

import json

import pytest

from chanlite.topics.protocol import (
    Closed,
    Frame,
    FrameError,
    Heartbeat,
    JoinRequest,
    Left,
    Limits,
    PushRequest,
    Refusal,
    SocketProtocol,
    decode,
    encode_broadcast,
    encode_message,
    encode_reply,
)

# -- decoding -----------------------------------------------------------------------------


def test_decode_text_frame() -> None:
    assert decode('["1","2","room:lobby","new_msg",{"body":"hi"}]') == Frame(
        "1", "2", "room:lobby", "new_msg", {"body": "hi"}
    )


def test_decode_accepts_null_and_numeric_refs() -> None:
    assert decode('[null,7,"phoenix","heartbeat",{}]') == Frame(
        None, "7", "phoenix", "heartbeat", {}
    )


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "message is not JSON"),
        (
            '{"topic":"x"}',
            "must be a JSON array [join_ref, ref, topic, event, payload], not a dict",
        ),
        ('["1","1","t","e"]', "must have 5 elements [join_ref, ref, topic, event, payload], not 4"),
        ('["1","1","t","e",{},1]', "not 6"),
        ('["1","1",3,"e",{}]', "topic must be a string, not int"),
        ('["1","1","","e",{}]', "topic must not be empty"),
        ('["1","1","t",null,{}]', "event must be a string, not NoneType"),
        ('[true,"1","t","e",{}]', "join_ref must be a string or null, not bool"),
        ('["1",[1],"t","e",{}]', "ref must be a string or null, not list"),
    ],
)
def test_decode_text_errors(message: str, error: str) -> None:
    with pytest.raises(FrameError, match=error.replace("[", r"\[").replace("]", r"\]")) as info:
        decode(message)
    assert info.value.code == 1007


def binary_push(join_ref: bytes, ref: bytes, topic: bytes, event: bytes, data: bytes) -> bytes:
    return (
        bytes([0, len(join_ref), len(ref), len(topic), len(event)])
        + join_ref
        + ref
        + topic
        + event
        + data
    )


def test_decode_binary_push() -> None:
    raw = binary_push(b"12", b"3", b"room:1", b"upload", b"\x00\xffdata")
    assert decode(raw) == Frame("12", "3", "room:1", "upload", b"\x00\xffdata")


def test_decode_binary_push_without_refs() -> None:
    assert decode(binary_push(b"", b"", b"t", b"e", b"")) == Frame(None, None, "t", "e", b"")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\x00\x01", "binary message of 2 bytes is shorter than its 5-byte header"),
        (b"\x01\x00\x00\x01\x01te", "binary message of kind 1: a client may only send pushes"),
        (b"\x00\x00\x00\x05\x01tee", "shorter than its header says (11)"),
        (binary_push(b"", b"", b"\xff", b"e", b""), "binary message's topic is not UTF-8"),
        (binary_push(b"", b"", b"", b"e", b""), "topic must not be empty"),
    ],
)
def test_decode_binary_errors(raw: bytes, error: str) -> None:
    with pytest.raises(FrameError, match=error.replace("(", r"\(").replace(")", r"\)")):
        decode(raw)


# -- encoding -----------------------------------------------------------------------------


def test_encode_text_messages() -> None:
    assert encode_message("1", None, "room:1", "new_msg", {"a": "é"}) == (
        '["1",null,"room:1","new_msg",{"a":"é"}]'
    )
    assert encode_reply("1", "5", "room:1", "ok", {"n": 1}) == (
        '["1","5","room:1","phx_reply",{"status":"ok","response":{"n":1}}]'
    )
    assert encode_broadcast("room:1", "e", {}) == '[null,null,"room:1","e",{}]'


def test_encode_binary_push_has_no_ref() -> None:
    assert encode_message("12", None, "room:1", "ev", b"\x01\x02") == (
        b"\x00\x02\x06\x02" + b"12" + b"room:1" + b"ev" + b"\x01\x02"
    )


def test_encode_binary_reply_carries_status_in_the_event_slot() -> None:
    assert encode_reply("1", "22", "t", "ok", b"\xfe") == (
        b"\x01\x01\x02\x01\x02" + b"1" + b"22" + b"t" + b"ok" + b"\xfe"
    )


def test_encode_binary_broadcast() -> None:
    assert encode_broadcast("room:1", "ev", b"xyz") == b"\x02\x06\x02room:1evxyz"


def test_binary_fields_over_255_bytes_are_refused() -> None:
    with pytest.raises(
        ValueError, match="topic is 256 bytes; a binary message carries at most 255"
    ):
        encode_broadcast("t" * 256, "e", b"")


# -- the protocol state machine -----------------------------------------------------------


def joined(protocol: SocketProtocol, topic: str = "room:1", ref: str = "1") -> JoinRequest:
    (request,) = protocol.receive(json.dumps([ref, ref, topic, "phx_join", {"x": 1}]), 0.0)
    assert isinstance(request, JoinRequest)
    protocol.accept_join(request, {})
    assert protocol.data_to_send() == [
        f'["{ref}","{ref}","{topic}","phx_reply",{{"status":"ok","response":{{}}}}]'
    ]
    return request


def test_heartbeat_is_answered_ok() -> None:
    protocol = SocketProtocol()
    assert protocol.receive('[null,"9","phoenix","heartbeat",{}]', 0.0) == [Heartbeat()]
    assert protocol.data_to_send() == [
        '[null,"9","phoenix","phx_reply",{"status":"ok","response":{}}]'
    ]


def test_join_then_push_then_reply() -> None:
    protocol = SocketProtocol()
    request = joined(protocol)
    assert request == JoinRequest("room:1", "1", "1", {"x": 1})
    events = protocol.receive('["1","2","room:1","new_msg",{"body":"hi"}]', 0.0)
    assert events == [PushRequest("room:1", "new_msg", "2", {"body": "hi"})]
    assert protocol.reply("room:1", "2", "ok", {"id": 1})
    assert protocol.data_to_send() == [
        '["1","2","room:1","phx_reply",{"status":"ok","response":{"id":1}}]'
    ]


def test_refused_join_replies_error_and_leaves_nothing_joined() -> None:
    protocol = SocketProtocol()
    (request,) = protocol.receive('["1","1","room:1","phx_join",{}]', 0.0)
    assert isinstance(request, JoinRequest)
    protocol.refuse_join(request, {"reason": "unauthorized"})
    assert protocol.data_to_send() == [
        '["1","1","room:1","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}]'
    ]
    assert protocol.joined == {}


def test_unmatched_topic_join_is_answered_without_join_ref() -> None:
    protocol = SocketProtocol()
    (request,) = protocol.receive('["1","1","nope:1","phx_join",{}]', 0.0)
    assert isinstance(request, JoinRequest)
    protocol.refuse_join(request, {"reason": "unmatched topic"}, unmatched=True)
    assert protocol.data_to_send() == [
        '[null,"1","nope:1","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]'
    ]


def test_push_to_a_topic_never_joined_is_answered_unmatched() -> None:
    protocol = SocketProtocol()
    events = protocol.receive('["4","5","room:9","new_msg",{}]', 0.0)
    assert events == [Refusal("room:9", "'new_msg' to a topic that is not joined")]
    assert protocol.data_to_send() == [
        '[null,"5","room:9","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]'
    ]


def test_leave_replies_ok_then_closes() -> None:
    protocol = SocketProtocol()
    joined(protocol)
    assert protocol.receive('["1","3","room:1","phx_leave",{}]', 0.0) == [Left("room:1", "leave")]
    assert protocol.data_to_send() == [
        '["1","3","room:1","phx_reply",{"status":"ok","response":{}}]',
        '["1","1","room:1","phx_close",{}]',
    ]
    assert protocol.joined == {}


def test_leave_of_a_topic_never_joined_is_answered_ok() -> None:
    protocol = SocketProtocol()
    assert protocol.receive('["1","3","room:1","phx_leave",{}]', 0.0) == []
    assert protocol.data_to_send() == [
        '["1","3","room:1","phx_reply",{"status":"ok","response":{}}]'
    ]


def test_second_join_closes_the_first() -> None:
    protocol = SocketProtocol()
    joined(protocol, ref="1")
    events = protocol.receive('["7","7","room:1","phx_join",{}]', 0.0)
    assert events[0] == Left("room:1", "rejoin")
    assert isinstance(events[1], JoinRequest)
    assert protocol.data_to_send() == ['["1","1","room:1","phx_close",{}]']
    protocol.accept_join(events[1], {"again": True})
    assert protocol.data_to_send() == [
        '["7","7","room:1","phx_reply",{"status":"ok","response":{"again":true}}]'
    ]
    assert protocol.join_ref("room:1") == "7"


def test_stale_join_ref_is_ignored() -> None:
    protocol = SocketProtocol()
    joined(protocol, ref="5")
    events = protocol.receive('["4","6","room:1","new_msg",{}]', 0.0)
    assert events == [Refusal("room:1", "stale 'new_msg' (join_ref '4')")]
    assert protocol.data_to_send() == []


def test_client_may_not_send_the_server_events() -> None:
    protocol = SocketProtocol()
    joined(protocol)
    events = protocol.receive('["1","2","room:1","phx_reply",{}]', 0.0)
    assert isinstance(events[0], Refusal)
    assert protocol.data_to_send() == [
        '["1","2","room:1","phx_reply",{"status":"error","response":'
        '{"reason":"phx_reply is the server\'s event"}}]'
    ]


def test_server_push_close_and_error() -> None:
    protocol = SocketProtocol()
    joined(protocol, ref="3")
    assert protocol.push("room:1", "tick", {"n": 1})
    assert protocol.error("room:1")
    assert not protocol.push("room:1", "tick", {})
    assert protocol.data_to_send() == [
        '["3",null,"room:1","tick",{"n":1}]',
        '["3","3","room:1","phx_error",{"reason":"channel_crash"}]',
    ]
    joined(protocol, ref="4")
    assert protocol.close("room:1")
    assert not protocol.close("room:1")
    assert protocol.data_to_send() == ['["4","4","room:1","phx_close",{}]']


def test_too_many_topics() -> None:
    protocol = SocketProtocol(Limits(max_topics=2))
    joined(protocol, "a", "1")
    joined(protocol, "b", "2")
    events = protocol.receive('["3","3","c","phx_join",{}]', 0.0)
    assert events == [Refusal("c", "join past the limit of 2 topics")]
    assert protocol.data_to_send() == [
        '["3","3","c","phx_reply",{"status":"error","response":'
        '{"reason":"too many channels joined"}}]'
    ]
    # Rejoining a topic already held is not one more.
    assert isinstance(protocol.receive('["4","4","a","phx_join",{}]', 0.0)[-1], JoinRequest)


def test_join_rate_is_a_token_bucket() -> None:
    protocol = SocketProtocol(Limits(join_rate=2.0, join_burst=2))
    kinds = [
        type(protocol.receive(json.dumps([str(n), str(n), f"t{n}", "phx_join", {}]), 0.0)[-1])
        for n in range(3)
    ]
    assert kinds == [JoinRequest, JoinRequest, Refusal]
    assert protocol.data_to_send()[-1] == (
        '["2","2","t2","phx_reply",{"status":"error","response":{"reason":"join rate exceeded"}}]'
    )
    # Half a second later one more token has come back.
    assert isinstance(protocol.receive('["9","9","t9","phx_join",{}]', 0.5)[-1], JoinRequest)


def test_join_while_the_same_join_is_pending_is_refused() -> None:
    protocol = SocketProtocol()
    protocol.receive('["1","1","t","phx_join",{}]', 0.0)
    events = protocol.receive('["2","2","t","phx_join",{}]', 0.0)
    assert events == [Refusal("t", "phx_join while a join of the same topic is pending")]


@pytest.mark.parametrize(
    ("message", "code", "detail"),
    [
        ("x" * 101, 1009, "a message of 101 bytes (the limit is 100)"),
        ("é" * 51, 1009, "a message of 102 bytes (the limit is 100)"),
        (b"\x00" * 101, 1009, "a message of 101 bytes (the limit is 100)"),
        ("[1,2", 1007, "message is not JSON"),
    ],
)
def test_unreadable_messages_close(message: str | bytes, code: int, detail: str) -> None:
    protocol = SocketProtocol(Limits(max_message=100))
    (event,) = protocol.receive(message, 0.0)
    assert isinstance(event, Closed)
    assert event.code == code
    assert event.detail.startswith(detail)
