"""gymwire protocol v1, sans-I/O: message models, codecs, versions, errors, the per-session state
machines and the per-connection rules of both ends.

Nothing here opens a socket or imports asyncio; server and client runtimes live in `gymwire.sdk`.
"""

from .codec import Codec, error_from_message, error_message, message_from_object
from .errors import ErrorCode, ProtocolError, error_table
from .messages import *  # noqa: F403
from .messages import CAPABILITIES, CLIENT_MESSAGES, MESSAGE_TYPES, SERVER_MESSAGES
from .connection import (
    ClientConnection,
    Heartbeat,
    Liveness,
    MissingCapability,
    ServerConnection,
    ServerTimer,
    origin_refusal,
    rebinding_refusal,
    server_capabilities,
)
from .session import ClientSessionMachine, Decision, SessionMachine, SessionState
from .version import (
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBPROTOCOLS,
    Encoding,
    negotiate_version,
    select_subprotocol,
    subprotocol_for,
)
