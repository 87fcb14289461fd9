"""Every message type survives encode -> decode unchanged in both encodings."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest
from protocol_samples import PNG_BYTES, SAMPLES

from gymwire.protocol import MESSAGE_TYPES, Codec, Encoding, ErrorCode, ProtocolError
from gymwire.protocol import messages as m

ENCODINGS = [Encoding.MSGPACK, Encoding.JSON]


def test_samples_cover_every_message_type():
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    assert all(type(sample) is MESSAGE_TYPES[name] for name, sample in SAMPLES.items())


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
def test_every_message_round_trips(encoding, message_type):
    codec = Codec(encoding)
    sample = SAMPLES[message_type]
    frame = codec.encode(sample)
    assert isinstance(frame, bytes if encoding is Encoding.MSGPACK else str)
    decoded = codec.decode(frame)
    assert type(decoded) is type(sample)
    assert decoded == sample


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
def test_every_message_round_trips_with_only_required_fields(encoding, message_type):
    model = MESSAGE_TYPES[message_type]
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    minimal = model.model_validate(SAMPLES[message_type].model_dump(include=required))
    codec = Codec(encoding)
    frame = codec.encode(minimal)
    assert codec.decode(frame) == minimal
    # Absent optional values are omitted, not sent as null (GW-FRAME-11).
    wire = msgpack.unpackb(frame) if encoding is Encoding.MSGPACK else json.loads(frame)
    assert None not in wire.values()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_message_moves_between_encodings_unchanged(encoding):
    other = Codec(Encoding.JSON if encoding is Encoding.MSGPACK else Encoding.MSGPACK)
    sample = SAMPLES["step_batch_result"]
    assert other.decode(other.encode(Codec(encoding).decode(Codec(encoding).encode(sample)))) == sample


def test_images_travel_as_raw_bytes_in_msgpack():
    frame = Codec(Encoding.MSGPACK).encode(SAMPLES["step_result"])
    wire = msgpack.unpackb(frame, raw=False)
    data = wire["observation"]["images"][0]["data"]
    assert type(data) is bytes and data == PNG_BYTES


def test_images_travel_as_base64_text_in_json():
    frame = Codec(Encoding.JSON).encode(SAMPLES["step_result"])
    wire = json.loads(frame)
    assert wire["observation"]["images"][0]["data"] == base64.b64encode(PNG_BYTES).decode("ascii")
    assert wire["observation"]["images"][1]["data"] == ""


def test_image_data_that_is_not_base64_is_a_bad_frame():
    wire = json.loads(Codec(Encoding.JSON).encode(SAMPLES["step_result"]))
    wire["observation"]["images"][0]["data"] = "not base64!"
    with pytest.raises(ProtocolError) as caught:
        Codec(Encoding.JSON).decode(json.dumps(wire))
    assert caught.value.code is ErrorCode.BAD_FRAME
    assert caught.value.request_id == wire["id"]
    assert "base64" in caught.value.message


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_unknown_fields_are_ignored_at_every_level(encoding):
    codec = Codec(encoding)
    wire = SAMPLES["step_result"].model_dump(mode="json" if encoding is Encoding.JSON else "python", exclude_none=True)
    wire["added_in_1_1"] = {"anything": [1, 2]}
    wire["observation"]["hint"] = "new optional field"
    wire["metrics"]["steps_per_second"] = 3.5
    assert codec.decode(codec.encode_object(wire)) == SAMPLES["step_result"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_explicit_null_for_an_optional_field_reads_as_absent(encoding):
    codec = Codec(encoding)
    decoded = codec.decode(codec.encode_object({"type": "open", "id": 1, "env": "guess", "max_turns": None}))
    assert isinstance(decoded, m.Open) and decoded.max_turns is None


def test_batch_result_entries_keep_their_types():
    decoded = Codec(Encoding.MSGPACK).decode(Codec(Encoding.MSGPACK).encode(SAMPLES["step_batch_result"]))
    assert [type(entry) for entry in decoded.results] == [m.StepResult, m.Error]
    assert all(entry.id == decoded.id for entry in decoded.results)
