"""Version negotiation, subprotocol selection, and the error table's wire form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gymwire.protocol import (
    PROTOCOL_MAJOR,
    PROTOCOL_VERSION,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBPROTOCOLS,
    Codec,
    Encoding,
    ErrorCode,
    Hello,
    ProtocolError,
    error_from_message,
    error_message,
    error_table,
    negotiate_version,
    select_subprotocol,
    subprotocol_for,
)
from gymwire.protocol.messages import Error


@pytest.mark.parametrize(
    ("client", "server", "agreed"),
    [("1.0", "1.0", "1.0"), ("1.5", "1.2", "1.2"), ("1.1", "1.3", "1.1"), ("1.0", "1.9", "1.0"), ("2.7", "2.3", "2.3")],
)
def test_the_negotiated_version_is_the_common_major_and_the_lower_minor(client, server, agreed):
    assert negotiate_version(client, server) == agreed


@pytest.mark.parametrize(("client", "server"), [("2.0", "1.0"), ("0.9", "1.0"), ("1.0", "2.0"), ("10.0", "1.0")])
def test_another_major_is_unsupported_version_naming_both(client, server):
    with pytest.raises(ProtocolError) as caught:
        negotiate_version(client, server)
    assert caught.value.code is ErrorCode.UNSUPPORTED_VERSION
    assert client in caught.value.message and server in caught.value.message
    assert not caught.value.retryable


@pytest.mark.parametrize(
    "text",
    ["1", "1.0.0", "v1.0", "", "1.0\n", " 1.0", "1.-1", "1.x", "\u0661.0", "1." + "9" * 5000],
    ids=lambda text: ascii(text[:12]),
)
def test_a_malformed_version_is_bad_frame_that_shows_the_expected_form(text):
    with pytest.raises(ProtocolError) as caught:
        negotiate_version(text)
    assert caught.value.code is ErrorCode.BAD_FRAME
    assert "MAJOR.MINOR" in caught.value.message and len(caught.value.message) < 200


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30) | st.from_regex(r"\A\d{1,12}\.\d{1,12}\Z"))
def test_any_version_text_negotiates_or_fails_typed(text):
    try:
        agreed = negotiate_version(text)
    except ProtocolError as error:
        assert error.code in (ErrorCode.BAD_FRAME, ErrorCode.UNSUPPORTED_VERSION)
    else:
        major, minor = map(int, agreed.split("."))
        assert major == PROTOCOL_MAJOR and minor <= int(PROTOCOL_VERSION.split(".")[1])


def test_hello_defaults_to_this_version():
    assert Hello(id=1).version == PROTOCOL_VERSION == f"{PROTOCOL_MAJOR}.0"


def test_the_subprotocols_name_the_major_and_the_encoding():
    assert SUBPROTOCOL_MSGPACK == "gymwire.v1+msgpack" and SUBPROTOCOL_JSON == "gymwire.v1+json"
    assert SUBPROTOCOLS == {SUBPROTOCOL_MSGPACK: Encoding.MSGPACK, SUBPROTOCOL_JSON: Encoding.JSON}
    assert subprotocol_for("json") == SUBPROTOCOL_JSON and subprotocol_for(Encoding.MSGPACK) == SUBPROTOCOL_MSGPACK
    for name, encoding in SUBPROTOCOLS.items():
        assert Codec(encoding).binary is (name == SUBPROTOCOL_MSGPACK)


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["gymwire.v1+msgpack"], "gymwire.v1+msgpack"),
        (["gymwire.v1+json"], "gymwire.v1+json"),
        (["gymwire.v1+json", "gymwire.v1+msgpack"], "gymwire.v1+json"),  # the client's preference wins
        (["gymwire.v2+msgpack", "chat", "gymwire.v1+msgpack"], "gymwire.v1+msgpack"),
        (["gymwire.v1+xml", "gymwire.v1+json"], "gymwire.v1+json"),
    ],
)
def test_the_first_offered_subprotocol_this_version_speaks_is_selected(offered, selected):
    assert select_subprotocol(offered) == selected


@pytest.mark.parametrize(
    ("offered", "hint"),
    [
        (["gymwire.v2+msgpack"], "major version(s) [2]"),
        (["gymwire.v2+json", "gymwire.v3+msgpack"], "major version(s) [2, 3]"),
        ([], "no gymwire subprotocol offered (none)"),
        (["chat", "graphql-ws"], "no gymwire subprotocol offered (chat, graphql-ws)"),
        (["gymwire.v1"], "no gymwire subprotocol offered"),
        (["GYMWIRE.V1+MSGPACK"], "no gymwire subprotocol offered"),
        (["gymwire.v" + "9" * 5000 + "+json"], "no gymwire subprotocol offered"),
    ],
)
def test_no_common_subprotocol_is_unsupported_version_naming_the_supported_ones(offered, hint):
    with pytest.raises(ProtocolError) as caught:
        select_subprotocol(offered)
    assert caught.value.code is ErrorCode.UNSUPPORTED_VERSION
    assert hint in caught.value.message
    assert SUBPROTOCOL_MSGPACK in caught.value.message and SUBPROTOCOL_JSON in caught.value.message
    assert len(caught.value.message) < 400


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=40) | st.sampled_from(list(SUBPROTOCOLS) + ["gymwire.v2+json"]), max_size=5))
def test_any_offer_selects_a_supported_subprotocol_or_fails_typed(offered):
    try:
        selected = select_subprotocol(offered)
    except ProtocolError as error:
        assert error.code is ErrorCode.UNSUPPORTED_VERSION
        assert not any(name in SUBPROTOCOLS for name in offered)
    else:
        assert selected == next(name for name in offered if name in SUBPROTOCOLS)


# ----------------------------------------------------------------------------- errors on the wire


def test_error_codes_are_unique_and_their_table_is_complete():
    rows = error_table()
    assert len({row["code"] for row in rows}) == len(rows) == len(ErrorCode)
    assert {row["name"] for row in rows} == {code.name for code in ErrorCode}
    assert {row["name"] for row in rows if row["retryable"]} == {"CAPACITY", "TIMEOUT", "CANCELLED", "DRAINING", "INTERNAL"}


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_every_error_survives_the_wire(code):
    sent = ProtocolError(code, "what to do", request_id=7, session="s-1", retry_after_ms=100)
    wire = error_message(sent)
    assert (wire.code, wire.name, wire.retryable) == (code.code, code.name, code.retryable)
    for encoding in (Encoding.MSGPACK, Encoding.JSON):
        codec = Codec(encoding)
        received = error_from_message(codec.decode(codec.encode(wire)))
        assert received.code is code and received.retryable is code.retryable
        assert (received.request_id, received.session, received.retry_after_ms) == (7, "s-1", 100)
        assert received.message == "what to do" and received.details is None


@pytest.mark.parametrize("retryable", [True, False])
def test_an_unknown_code_is_internal_keeping_the_senders_retryable_flag(retryable):
    received = error_from_message(Error(id=3, code=57, name="FROM_THE_FUTURE", message="m", retryable=retryable))
    assert received.code is ErrorCode.INTERNAL
    assert received.retryable is retryable
    assert received.details == {"code": 57, "name": "FROM_THE_FUTURE"}


def test_a_connection_level_error_has_no_id_on_the_wire():
    frame = Codec(Encoding.JSON).encode(error_message(ProtocolError(ErrorCode.BAD_FRAME, "undecodable")))
    assert '"id"' not in frame
