"""Hostile input: whatever reaches a decoder, the only exception is ProtocolError, with the right code.

The oracle for structured input: a frame that is not a map, or has no string `type`, is BAD_FRAME;
an unknown `type` is UNKNOWN_MESSAGE; a known type either decodes to its model or is BAD_FRAME.
The request id is attached whenever the frame carries a valid one.
"""

from __future__ import annotations

import json
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_samples import SAMPLES

from gymwire.protocol import MESSAGE_TYPES, Codec, Encoding, ErrorCode, Message, ProtocolError

MAX_ID = 2**53 - 1
MSGPACK = Codec(Encoding.MSGPACK)
JSON = Codec(Encoding.JSON)
fuzz = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(codec: Codec, frame: bytes | str) -> Message | ProtocolError:
    """Decode, turning ProtocolError into a value; any other exception fails the test."""
    try:
        message = codec.decode(frame)
    except ProtocolError as error:
        return error
    assert isinstance(message, Message)
    return message


def valid_id(obj: object) -> int | None:
    if isinstance(obj, dict):
        rid = obj.get("id")
        if type(rid) is int and 0 <= rid <= MAX_ID:
            return rid
    return None


def assert_oracle(obj: object, outcome: Message | ProtocolError) -> None:
    """Check the outcome of decoding a frame that holds the plain object `obj`."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    if isinstance(outcome, Message):
        assert isinstance(kind, str) and type(outcome) is MESSAGE_TYPES[kind]
        return
    if not isinstance(kind, str):
        assert outcome.code is ErrorCode.BAD_FRAME
    elif kind not in MESSAGE_TYPES:
        assert outcome.code is ErrorCode.UNKNOWN_MESSAGE
        assert repr(kind[:64]) in outcome.message
    else:
        assert outcome.code is ErrorCode.BAD_FRAME
    if isinstance(kind, str):
        assert outcome.request_id == valid_id(obj)


# ----------------------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
msgpack_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats() | st.text()
    | st.binary(max_size=16)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SPECIAL_VALUES = [-1, 0, 1, 1.0, True, "", "x" * 200, 2**53, MAX_ID, [], {}]
message_types = st.sampled_from(sorted(MESSAGE_TYPES))


def message_like(values: st.SearchStrategy) -> st.SearchStrategy:
    """Maps shaped like messages (a `type`, usually known, and an `id`), so decoders get past dispatch."""
    fields = values | st.sampled_from(SPECIAL_VALUES)
    head = st.fixed_dictionaries({"type": message_types | st.text(max_size=12)}, optional={"id": fields})
    rest = st.dictionaries(st.text(max_size=12), fields, max_size=6)
    return st.tuples(head, rest).map(lambda parts: {**parts[1], **parts[0]})


field_values = msgpack_values | st.sampled_from(SPECIAL_VALUES)


# ----------------------------------------------------------------------------- arbitrary bytes and text


@fuzz
@given(st.binary(max_size=256))
def test_arbitrary_bytes_give_only_typed_errors_in_msgpack(frame):
    outcome = decode(MSGPACK, frame)
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=lambda code, data: None)
    except Exception:
        assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
        assert outcome.request_id is None
        return
    if isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME:
        return  # an extension type or a timestamp inside an otherwise decodable frame
    assert_oracle(obj, outcome)


@fuzz
@given(st.binary(max_size=256) | st.text(max_size=256).map(str.encode))
def test_arbitrary_bytes_give_only_typed_errors_in_json(frame):
    outcome = decode(JSON, frame)
    if isinstance(outcome, ProtocolError) and outcome.message.startswith("undecodable"):
        # Python's json is laxer (NaN, UTF-16 input), so it is no oracle for what is undecodable.
        assert outcome.code is ErrorCode.BAD_FRAME and outcome.request_id is None
        return
    assert_oracle(json.loads(frame), outcome)


@fuzz
@given(st.text(alphabet=st.characters(codec=None, categories=["L", "N", "P", "S", "Z", "Cc", "Cs"]), max_size=64))
def test_arbitrary_text_including_lone_surrogates_gives_only_typed_errors_in_json(text):
    frame = '{"type": "step", "id": 3, "session": "s", "seq": 1, "action": ' + json.dumps(text, ensure_ascii=False) + "}"
    outcome = decode(JSON, frame)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
    else:
        assert isinstance(outcome, Message) and outcome.action == text


# ----------------------------------------------------------------------------- arbitrary structures


@fuzz
@given(json_values | message_like(json_values))
def test_arbitrary_json_values_decode_or_fail_with_the_right_code(obj):
    assert_oracle(obj, decode(JSON, json.dumps(obj)))


@fuzz
@given(msgpack_values | message_like(msgpack_values))
def test_arbitrary_msgpack_structures_decode_or_fail_with_the_right_code(obj):
    assert_oracle(obj, decode(MSGPACK, msgpack.packb(obj, use_bin_type=True)))


@fuzz
@given(message_types, st.data())
def test_wrong_types_and_missing_fields_are_bad_frames_that_keep_the_id(message_type, data):
    wire = SAMPLES[message_type].model_dump(exclude_none=True)
    fields = sorted(set(wire) - {"type", "id"})
    if not fields:
        return
    field = data.draw(st.sampled_from(fields))
    if data.draw(st.booleans()):
        del wire[field]
    else:
        wire[field] = data.draw(field_values)
    for codec in (MSGPACK, JSON):
        frame = codec.encode_object(wire) if codec is MSGPACK else json.dumps(wire, default=repr, allow_nan=True)
        outcome = decode(codec, frame)
        if isinstance(outcome, ProtocolError):
            assert outcome.code is ErrorCode.BAD_FRAME
            # NaN/Infinity make a JSON frame undecodable as a whole: then no id can be read.
            undecodable = outcome.message.startswith("undecodable")
            assert outcome.request_id == (None if undecodable else wire.get("id"))
        else:
            assert type(outcome) is MESSAGE_TYPES[message_type]


@fuzz
@given(message_types, st.dictionaries(st.text(min_size=1, max_size=12), msgpack_values, max_size=4))
def test_unknown_fields_never_change_the_decoded_message(message_type, extra):
    sample = SAMPLES[message_type]
    wire = sample.model_dump(exclude_none=True)
    wire.update({key: value for key, value in extra.items() if key not in type(sample).model_fields})
    assert MSGPACK.decode(MSGPACK.encode_object(wire)) == sample


@fuzz
@given(st.text(max_size=40).filter(lambda t: t not in MESSAGE_TYPES), st.integers(min_value=0, max_value=MAX_ID))
def test_unknown_message_types_are_unknown_message_with_the_id(kind, request_id):
    for codec in (MSGPACK, JSON):
        outcome = decode(codec, codec.encode_object({"type": kind, "id": request_id}))
        assert isinstance(outcome, ProtocolError)
        assert outcome.code is ErrorCode.UNKNOWN_MESSAGE and outcome.request_id == request_id


# ----------------------------------------------------------------------------- specific hostile frames


@pytest.mark.parametrize("value", [-1, MAX_ID + 1, 2**64 - 1, 1.0, True, "7", None, [1]])
def test_invalid_request_ids_are_bad_frames_without_an_id(value):
    for codec in (MSGPACK, JSON):
        outcome = decode(codec, codec.encode_object({"type": "ping", "id": value}))
        assert isinstance(outcome, ProtocolError)
        assert outcome.code is ErrorCode.BAD_FRAME and outcome.request_id is None


@fuzz
@given(msgpack_values, st.integers(min_value=0, max_value=127), st.binary(max_size=20), st.sampled_from(sorted(MESSAGE_TYPES)))
def test_an_extension_type_anywhere_makes_a_bad_frame(value, ext_code, ext_data, message_type):
    wire = SAMPLES[message_type].model_dump(exclude_none=True)
    wire["extra"] = [value, {"deep": msgpack.ExtType(ext_code, ext_data)}]
    outcome = decode(MSGPACK, msgpack.packb(wire, use_bin_type=True))
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "frame",
    [
        msgpack.packb(msgpack.ExtType(5, b"abc")),
        # a reserved (negative) extension type nested in a free map: fixext1, type -7
        b"\x83\xa4type\xabstep_result\xa2id\x01\xa4info\x81\xa1x\x91\xd4\xf9\x00",
        msgpack.packb({"type": "ping", "id": 1, "when": msgpack.Timestamp(1_700_000_000, 5)}),
        msgpack.packb({"type": "ping", "id": 1, "when": [msgpack.Timestamp(2**33, 0)]}),
        # a 4-byte timestamp in an ext8 header: the least common way to write one
        b"\x83\xa4type\xa4ping\xa2id\x01\xa4when\xc7\x04\xff\x00\x00\x00\x01",
    ],
    ids=["ext-top", "ext-nested", "timestamp32", "timestamp64", "timestamp-ext8"],
)
def test_msgpack_extension_types_are_bad_frames(frame):
    outcome = decode(MSGPACK, frame)
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
    assert "extension type" in outcome.message


@fuzz
@given(st.binary(max_size=20), st.sampled_from(sorted(MESSAGE_TYPES)), st.booleans())
def test_a_binary_map_key_anywhere_makes_a_bad_frame(key, message_type, nested):
    """GW-FRAME-7: map keys are strings; msgpack's strict_map_key lets binary keys through."""
    wire = SAMPLES[message_type].model_dump(exclude_none=True)
    if nested:
        wire["extra"] = [{"deep": {key: 1}}]
    else:
        wire[key] = 1
    outcome = decode(MSGPACK, msgpack.packb(wire, use_bin_type=True))
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
    assert "not binary" in outcome.message


@pytest.mark.parametrize(
    "frame",
    [
        b"\x82\xa4type\xa4ping\xa2id\xa3\xff\xfe\xfd",  # str with invalid UTF-8
        b"\x82\xa4type\xa4ping\x01\x02",  # integer map key
        msgpack.packb({"type": "ping", "id": 1}) + b"\xc0",  # trailing data
        b"\xc1",  # never-used type byte
        b"\x92\x01",  # truncated array
        b"",
    ],
    ids=["invalid-utf8", "int-key", "trailing", "reserved-byte", "truncated", "empty"],
)
def test_undecodable_msgpack_frames_are_bad_frames_with_a_reason(frame):
    outcome = decode(MSGPACK, frame)
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
    assert outcome.message.startswith("undecodable msgpack frame: ") and len(outcome.message) > 27


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type": "ping", "id": 1, "x": "\xff\xfe"}',
        '{"type": "ping", "id": 1, "x": "\udc80"}',
        '{"type": "ping", "id": NaN}',
        '{"type": "step_result", "id": 1, "session": "s", "seq": 1, "observation": {"text": ""}, "reward": Infinity}',
        '{"type": "ping", "id": 1} {"type": "ping", "id": 2}',
        '{"type": "ping", "id": 1',
        "",
    ],
    ids=["invalid-utf8", "lone-surrogate", "nan", "infinity", "two-values", "truncated", "empty"],
)
def test_undecodable_json_frames_are_bad_frames(frame):
    outcome = decode(JSON, frame)
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
    assert outcome.request_id is None


def test_a_text_frame_on_a_msgpack_connection_is_a_bad_frame_that_says_so():
    outcome = decode(MSGPACK, '{"type": "ping", "id": 1}')
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
    assert "binary" in outcome.message


@pytest.mark.parametrize("depth", [2_000, 200_000])
def test_deeply_nested_frames_are_bad_frames(depth):
    nested_json = '{"type": "ping", "id": 1, "x": ' + "[" * depth + "]" * depth + "}"
    nested_msgpack = b"\x83\xa4type\xa4ping\xa2id\x01\xa1x" + b"\x91" * depth + b"\xc0"
    for codec, frame in ((JSON, nested_json), (MSGPACK, nested_msgpack)):
        outcome = decode(codec, frame)
        assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME


def test_moderately_nested_free_maps_are_accepted():
    info: object = "leaf"
    for _ in range(50):
        info = {"k": [info]}
    frame = {"type": "step_result", "id": 1, "session": "s", "seq": 1, "observation": {"text": ""}, "info": info}
    for codec in (MSGPACK, JSON):
        assert decode(codec, codec.encode_object(frame)).info == info


@fuzz
@given(st.binary(min_size=65, max_size=300))
def test_frames_over_the_limit_are_frame_too_large_before_decoding(frame):
    outcome = decode(Codec(Encoding.MSGPACK, max_frame_bytes=64), frame)
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.FRAME_TOO_LARGE
    assert str(len(frame)) in outcome.message


def test_json_frame_size_counts_utf8_bytes_not_characters():
    frame = '{"type": "step", "id": 1, "session": "s", "seq": 1, "action": "' + "\u00e9" * 30 + '"}'
    assert len(frame) <= 100 < len(frame.encode())
    outcome = decode(Codec(Encoding.JSON, max_frame_bytes=100), frame)
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.FRAME_TOO_LARGE
    assert isinstance(decode(Codec(Encoding.JSON, max_frame_bytes=len(frame.encode())), frame), Message)


def test_error_messages_do_not_echo_huge_input():
    huge = "x" * 100_000
    for frame in ({"type": huge, "id": 1}, {"type": "ping", "id": huge}, {"type": "describe_env", "id": 1, "env": huge}):
        for codec in (MSGPACK, JSON):
            outcome = decode(codec, codec.encode_object(frame))
            assert isinstance(outcome, ProtocolError) and len(outcome.message) < 1_000


def test_nan_in_a_msgpack_float_field_is_accepted_but_not_in_json():
    frame = {"type": "step_result", "id": 1, "session": "s", "seq": 1, "observation": {"text": ""}, "reward": math.nan}
    assert math.isnan(decode(MSGPACK, MSGPACK.encode_object(frame)).reward)
    outcome = decode(JSON, json.dumps(frame))
    assert isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.BAD_FRAME
