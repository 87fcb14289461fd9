"""Protocol versions, WebSocket subprotocol names and the negotiation rules.

The subprotocol fixes the major version and the encoding (`gymwire.v1+msgpack`, `gymwire.v1+json`);
the hello/welcome handshake then settles the minor version: the server answers with the highest
minor version both sides speak.
"""

from __future__ import annotations

import enum
import re

from .errors import ErrorCode, ProtocolError

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
PROTOCOL_VERSION = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"


class Encoding(str, enum.Enum):
    MSGPACK = "msgpack"
    JSON = "json"


SUBPROTOCOL_MSGPACK = f"gymwire.v{PROTOCOL_MAJOR}+msgpack"
SUBPROTOCOL_JSON = f"gymwire.v{PROTOCOL_MAJOR}+json"
SUBPROTOCOLS: dict[str, Encoding] = {SUBPROTOCOL_MSGPACK: Encoding.MSGPACK, SUBPROTOCOL_JSON: Encoding.JSON}

# ASCII digits only (\d also matches other scripts), bounded: int() refuses more than 4300 digits
# with an untyped ValueError.
_SUBPROTOCOL_RE = re.compile(r"gymwire\.v([0-9]{1,9})\+([a-z0-9]+)")
_VERSION_RE = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})")


def subprotocol_for(encoding: Encoding | str) -> str:
    return f"gymwire.v{PROTOCOL_MAJOR}+{Encoding(encoding).value}"


def select_subprotocol(offered: list[str]) -> str:
    """Pick the first offered subprotocol this version speaks; raise a typed error otherwise.

    The error tells whether the client is of another major version or offered no gymwire one.
    """
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    majors = sorted({int(m.group(1)) for m in map(_SUBPROTOCOL_RE.fullmatch, offered) if m})
    supported = ", ".join(SUBPROTOCOLS)
    if majors:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"client offers gymwire major version(s) {majors}; this server speaks {supported}",
        )
    raise ProtocolError(
        ErrorCode.UNSUPPORTED_VERSION,
        f"no gymwire subprotocol offered ({', '.join(o[:64] for o in offered[:8]) or 'none'}); "
        f"offer one of: {supported}",
    )


def parse_version(text: str) -> tuple[int, int]:
    match = _VERSION_RE.fullmatch(text)
    if not match:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"version {text[:32]!r} is not of the form MAJOR.MINOR (e.g. {PROTOCOL_VERSION!r})"
        )
    return int(match.group(1)), int(match.group(2))


def negotiate_version(client_version: str, server_version: str = PROTOCOL_VERSION) -> str:
    """The version a session speaks: same major, the lower of the two minors."""
    c_major, c_minor = parse_version(client_version)
    s_major, s_minor = parse_version(server_version)
    if c_major != s_major:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"client speaks {client_version[:32]}, server speaks {server_version}: major versions differ",
        )
    return f"{s_major}.{min(c_minor, s_minor)}"
