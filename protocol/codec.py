"""Codecs: msgpack (binary frames) and JSON (text frames) over the same message models.

`decode` raises nothing but ProtocolError, whatever bytes it is given: undecodable input and
schema violations are BAD_FRAME, an unknown `type` is UNKNOWN_MESSAGE, an oversized frame is
FRAME_TOO_LARGE. The request id is attached to the error whenever it can be read.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pydantic
import pydantic_core

from .errors import ErrorCode, ProtocolError
from .messages import MAX_ID, MESSAGE_TYPES, Error, Message
from .version import Encoding

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
_MAX_ERROR_DETAIL = 300


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


# Two things msgpack lets through that the spec forbids (GW-FRAME-7): extension type -1 (timestamp),
# which it decodes itself without calling ext_hook, and binary (bytes) map keys, which
# strict_map_key allows. A timestamp's type byte is 0xff and a binary value starts with 0xc4-0xc6,
# so only frames holding one of those bytes pay for a walk of the decoded object. (Deleting them and
# comparing lengths takes a third of the time of a regex search on a step's frame.)
_SUSPECT_BYTES = b"\xc4\xc5\xc6\xff"


def _forbidden_content(obj: Any) -> str | None:
    """What in a decoded msgpack object the spec forbids, or None."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, msgpack.Timestamp):
            return "msgpack extension type -1 (timestamp) is not allowed"
        if isinstance(item, dict):
            if any(isinstance(key, bytes) for key in item):
                return "map keys must be strings, not binary"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _holds_images(obj: dict[str, Any]) -> bool:
    observation = obj.get("observation")
    return observation is not None and observation.get("images") is not None


def _request_id(obj: Any) -> int | None:
    if isinstance(obj, dict):
        rid = obj.get("id")
        if type(rid) is int and 0 <= rid <= MAX_ID:
            return rid
    return None


def _short(exc: BaseException) -> str:
    if isinstance(exc, pydantic.ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'frame'}: {e['msg']}" for e in exc.errors()[:5])
    else:
        # Some msgpack errors carry no text; the class name still tells what went wrong.
        text = str(exc).replace("\n", "; ") or type(exc).__name__
    return text if len(text) <= _MAX_ERROR_DETAIL else text[:_MAX_ERROR_DETAIL] + "..."


# Each message type's validator, called as is: `model_validate` only wraps it (a Python call a frame).
_VALIDATORS = {kind: model.__pydantic_validator__.validate_python for kind, model in MESSAGE_TYPES.items()}


def message_from_object(obj: Any) -> Message:
    """Validate a decoded map into its message model (shared by both codecs)."""
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"a frame must hold a map, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "the frame has no string 'type' field", request_id=_request_id(obj))
    validate = _VALIDATORS.get(kind)
    if validate is None:
        known = ", ".join(sorted(MESSAGE_TYPES))
        raise ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE,
            f"unknown message type {kind[:64]!r}; this version knows: {known}",
            request_id=_request_id(obj),
        )
    try:
        return validate(obj)  # type: ignore[no-any-return]
    except (pydantic.ValidationError, ValueError, TypeError, RecursionError) as exc:
        raise ProtocolError(
            ErrorCode.BAD_FRAME, f"invalid {kind!r} message: {_short(exc)}", request_id=_request_id(obj)
        ) from None


class Codec:
    """Encode and decode messages in one encoding. One per connection or thread: it keeps one
    msgpack packer, reused for every frame (a new packer a frame costs about 1 us)."""

    def __init__(self, encoding: Encoding | str = Encoding.MSGPACK, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.encoding = Encoding(encoding)
        self.max_frame_bytes = max_frame_bytes
        self.binary = self.encoding is Encoding.MSGPACK
        self._pack = msgpack.Packer(use_bin_type=True).pack  # resets itself after each frame

    def encode(self, message: Message | dict[str, Any]) -> bytes | str:
        """bytes for msgpack (a binary frame), str for JSON (a text frame). A dict is a message as
        the map it is sent as (a step's answer, see steps.py): the same bytes its model would give."""
        if type(message) is dict:
            try:
                if self.binary:
                    return self._pack(message)
                if not _holds_images(message):
                    return pydantic_core.to_json(message, inf_nan_mode="null", exclude_none=True).decode()
            except (TypeError, ValueError, pydantic_core.PydanticSerializationError):
                pass  # a value only the model's serializer turns into wire data (a dataclass in info, say)
            # JSON carries image bytes as base64 text: the model knows how.
            message = MESSAGE_TYPES[message["type"]].__pydantic_validator__.validate_python(message)
        # The model's serializer, called as is (model_dump and model_dump_json only wrap it).
        if self.binary:
            return self._pack(message.__pydantic_serializer__.to_python(message, exclude_none=True))
        return message.__pydantic_serializer__.to_json(message, exclude_none=True).decode()

    def encode_object(self, obj: dict[str, Any]) -> bytes | str:
        """Encode a raw map (used by tests and the conformance suite to send what models forbid)."""
        if self.binary:
            return self._pack(obj)
        return pydantic_core.to_json(obj).decode()

    def decode(self, frame: bytes | str) -> Message:
        return message_from_object(self.decode_map(frame))

    def decode_map(self, frame: bytes | str) -> Any:
        """A frame within max_frame_bytes, decoded to plain Python objects (not validated)."""
        if isinstance(frame, str) and not self.binary:
            # max_frame_bytes counts UTF-8 bytes, not characters.
            frame = frame.encode("utf-8", "surrogatepass")
        size = len(frame)
        if size > self.max_frame_bytes:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes exceeds max_frame_bytes={self.max_frame_bytes}"
            )
        return self.decode_object(frame)

    def request_id_of(self, frame: bytes | str) -> int | None:
        """The top-level `id` of a frame that is not decoded (one too large to take), or None.
        msgpack walks the top map's keys and skips the values; JSON has no such walk and parses."""
        try:
            if self.binary and isinstance(frame, (bytes, bytearray, memoryview)):
                unpacker = msgpack.Unpacker(raw=False, ext_hook=_reject_ext, max_buffer_size=max(len(frame), 1))
                unpacker.feed(frame)
                for _ in range(unpacker.read_map_header()):
                    if unpacker.unpack() == "id":
                        return _request_id({"id": unpacker.unpack()})
                    unpacker.skip()
                return None
            return _request_id(pydantic_core.from_json(frame if isinstance(frame, bytes) else frame.encode("utf-8", "surrogatepass")))
        except Exception:  # hostile or broken bytes: no id to read
            return None

    def decode_object(self, frame: bytes | str) -> Any:
        """Decode a frame to plain Python objects without schema validation."""
        try:
            if self.binary:
                if not isinstance(frame, (bytes, bytearray, memoryview)):
                    raise ProtocolError(ErrorCode.BAD_FRAME, "text frame on a msgpack connection; send binary frames")
                if type(frame) is not bytes:
                    frame = bytes(frame)  # a memoryview cannot be searched
                obj = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_reject_ext)
                if len(frame.translate(None, _SUSPECT_BYTES)) != len(frame):
                    forbidden = _forbidden_content(obj)
                    if forbidden is not None:
                        raise ValueError(forbidden)
                return obj
            if isinstance(frame, str):
                frame = frame.encode("utf-8", "surrogatepass")
            return pydantic_core.from_json(frame, allow_inf_nan=False)
        except ProtocolError:
            raise
        except (ValueError, TypeError, RecursionError, OverflowError, UnicodeError, msgpack.ExtraData) as exc:
            hint = ""
            if self.binary and bytes(frame[:1]) in (b"{", b"["):
                hint = " (it looks like JSON: send binary msgpack frames, or connect with gymwire.v1+json)"
            raise ProtocolError(ErrorCode.BAD_FRAME, f"undecodable {self.encoding.value} frame: {_short(exc)}{hint}") from None
        except Exception as exc:  # msgpack may raise its own exception types on hostile input
            raise ProtocolError(ErrorCode.BAD_FRAME, f"undecodable {self.encoding.value} frame: {_short(exc)}") from None


def size_over(frame: bytes | str, limit: int) -> int | None:
    """The frame's size in bytes (UTF-8 for text) when it exceeds `limit`, else None."""
    if isinstance(frame, str):
        # UTF-8 takes at most 4 bytes a character: only long text frames are worth measuring.
        if 4 * len(frame) <= limit:
            return None
        size = len(frame.encode("utf-8", "surrogatepass"))
    else:
        size = len(frame)
    return size if size > limit else None


def error_message(error: ProtocolError) -> Error:
    return Error(
        id=error.request_id,
        code=error.code.code,
        name=error.code.name,
        message=error.message,
        retryable=error.code.retryable,
        retry_after_ms=error.retry_after_ms,
        session=error.session,
    )


def error_from_message(message: Error) -> ProtocolError:
    """Turn a received error message back into a ProtocolError.

    An unknown code (from a newer minor version) becomes INTERNAL that keeps the sender's
    `retryable` flag, and the received code and name in `details`."""
    code = ErrorCode.from_code(message.code)
    known = code.code == message.code
    return ProtocolError(
        code,
        message.message,
        request_id=message.id,
        session=message.session,
        retry_after_ms=message.retry_after_ms,
        details=None if known else {"code": message.code, "name": message.name},
        retryable=None if known else message.retryable,
    )
