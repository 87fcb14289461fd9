"""A deliberately small WebSocket client that speaks gymwire v1 from spec/PROTOCOL.md alone.

It sends and receives plain dicts encoded here with msgpack or json, never the SDK's message
models or its client, so the conformance suite checks what is on the wire and also catches bugs
that the SDK's own codecs would share with the server. Everything sent and received is written
to a transcript, which failing checks show as evidence.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack
import websockets
from websockets.asyncio.client import ClientConnection, connect

from .spec_tables import ERROR_CODE_BY_NAME, ERROR_TABLE, SERVER_MESSAGE_TYPES, SUBPROTOCOL_BY_ENCODING

_EVIDENCE_CHARS = 300
_SECRET_FIELDS = ("token", "resume_token")


class NoAnswer(Exception):
    """The server sent nothing matching within the time allowed."""


class ConnectionLost(Exception):
    """The server closed the connection while an answer was awaited."""


@dataclass
class Violation:
    """Something the server sent that breaks the spec whatever the check was doing."""

    requirements: tuple[str, ...]
    message: str


@dataclass
class Transcript:
    """What went over the wire during one check, in order, each entry cut to a readable size."""

    entries: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, direction: str, label: str, payload: Any) -> None:
        text = payload if isinstance(payload, str) else _short_repr(payload)
        if len(text) > _EVIDENCE_CHARS:
            text = text[:_EVIDENCE_CHARS] + f"... ({len(text)} chars)"
        self.entries.append(f"{time.monotonic() - self.started:7.3f}s {label} {direction} {text}")


def _short_repr(obj: Any) -> str:
    def shrink(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)):
            return f"<{len(value)} bytes>"
        if isinstance(value, str) and len(value) > 120:
            return value[:120] + f"...<{len(value)} chars>"
        if isinstance(value, dict):
            # Reports get shared; bearer and resume tokens stay out of them.
            return {k: "<redacted>" if k in _SECRET_FIELDS and v else shrink(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shrink(v) for v in value[:20]]
        return value

    try:
        return json.dumps(shrink(obj), default=str)
    except (TypeError, ValueError):
        return repr(obj)


def encode(encoding: str, obj: Any) -> bytes | str:
    if encoding == "msgpack":
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj, separators=(",", ":"))


class RawConnection:
    """One WebSocket connection; a background reader files every frame it receives.

    `answer_pings=False` makes it play a half-open peer that never answers the server's pings.
    """

    def __init__(
        self, ws: ClientConnection, encoding: str, label: str, transcript: Transcript, answer_pings: bool = True
    ) -> None:
        self.ws = ws
        self.encoding = encoding
        self.label = label
        self.transcript = transcript
        self.answer_pings = answer_pings
        self.received: list[dict[str, Any]] = []  # every decoded message, in arrival order
        self.arrival: list[float] = []  # monotonic arrival time of each entry of `received`
        self.violations: list[Violation] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._consumed: set[int] = set()
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        encoding: str,
        label: str,
        transcript: Transcript,
        subprotocols: list[str] | None = None,
        answer_pings: bool = True,
        timeout: float = 10.0,
    ) -> "RawConnection":
        offered = subprotocols if subprotocols is not None else [SUBPROTOCOL_BY_ENCODING[encoding]]
        transcript.add("->", label, f"WebSocket upgrade offering {offered}")
        ws = await connect(
            url,
            subprotocols=offered,  # type: ignore[arg-type]
            max_size=None,  # the suite must see what the server sends, however large
            ping_interval=None,  # the protocol's heartbeat is under test, not WebSocket pings
            compression=None,
            open_timeout=timeout,
            close_timeout=1,
        )
        transcript.add("<-", label, f"upgrade accepted, subprotocol {ws.subprotocol!r}")
        return cls(ws, encoding, label, transcript, answer_pings)

    # ------------------------------------------------------------------ sending

    async def send(self, obj: dict[str, Any]) -> None:
        self.transcript.add("->", self.label, obj)
        await self.send_frame(encode(self.encoding, obj), log=False)

    async def send_frame(self, frame: bytes | str, *, log: bool = True) -> None:
        if log:
            kind = "binary" if isinstance(frame, (bytes, bytearray)) else "text"
            self.transcript.add("->", self.label, f"{kind} frame of {len(frame)} units: {frame[:80]!r}")
        try:
            await self.ws.send(frame)
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(f"the server had closed the connection ({exc})") from None

    async def request(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        await self.send(obj)
        return await self.answer(obj["id"], timeout)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake, as a network fault would."""
        self.transcript.add("--", self.label, "connection dropped (TCP abort, no close frame)")
        self.ws.transport.abort()

    async def close(self) -> None:
        """Close with a closing handshake; the reader then sees the end of the stream and stops."""
        await self.ws.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 2)
        except asyncio.TimeoutError:
            self._reader.cancel()

    # ------------------------------------------------------------------ receiving

    def _decode(self, frame: bytes | str) -> dict[str, Any] | None:
        binary = isinstance(frame, (bytes, bytearray))
        if binary != (self.encoding == "msgpack"):
            kind = "binary" if binary else "text"
            self.violations.append(Violation(("GW-FRAME-2",), f"server sent a {kind} frame on a {self.encoding} connection"))
        try:
            if binary and self.encoding == "msgpack":
                obj = msgpack.unpackb(frame, raw=False, strict_map_key=False)
            else:
                obj = json.loads(frame)
        except Exception as exc:  # anything undecodable is the server's fault; note it and go on
            self.violations.append(Violation(("GW-FRAME-2",), f"undecodable frame from the server: {exc}: {frame[:80]!r}"))
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            self.violations.append(Violation(("GW-FRAME-1",), f"server frame is not a map with a string type: {obj!r:.200}"))
            return None
        if obj["type"] not in SERVER_MESSAGE_TYPES:
            self.violations.append(Violation(("GW-VERSION-6",), f"server sent a message type v1.0 does not define: {obj['type']!r:.80}"))
        if obj["type"] == "error":
            self._check_error_shape(obj)
        return obj

    def _check_error_shape(self, error: dict[str, Any]) -> None:
        code = error.get("code")
        expected = ERROR_TABLE.get(code) if isinstance(code, int) else None
        problems = []
        if expected is None:
            problems.append(f"code {code!r} is not in the v1 table")
        elif (error.get("name"), error.get("retryable")) != expected:
            problems.append(
                f"code {code} must be name={expected[0]!r} retryable={expected[1]}, "
                f"got name={error.get('name')!r} retryable={error.get('retryable')!r}"
            )
        message = error.get("message")
        if not isinstance(message, str) or not message:
            problems.append("message must be a non-empty string")
        if problems:
            self.violations.append(Violation(("GW-ERROR-1",), f"malformed error {_short_repr(error)[:200]}: {'; '.join(problems)}"))
        if isinstance(message, str) and len(message) > 4096:
            self.violations.append(Violation(("GW-ERROR-8",), f"error message of {len(message)} chars echoes too much input"))
        if code == ERROR_CODE_BY_NAME["CAPACITY"] and not isinstance(error.get("retry_after_ms"), int):
            self.violations.append(Violation(("GW-ERROR-4",), f"CAPACITY error without retry_after_ms: {_short_repr(error)[:200]}"))

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                obj = self._decode(frame)
                if obj is None:
                    self.transcript.add("<-", self.label, f"unreadable frame {frame[:80]!r}")
                    continue
                self.transcript.add("<-", self.label, obj)
                if obj["type"] == "ping" and self.answer_pings and "id" in obj:
                    await self.send({"type": "pong", "id": obj["id"]})
                async with self._changed:
                    self.received.append(obj)
                    self.arrival.append(time.monotonic())
                    self._changed.notify_all()
        except (websockets.ConnectionClosed, ConnectionLost):
            pass
        finally:
            self.close_code = self.ws.close_code if self.ws.close_code is not None else 1006
            self.transcript.add("<-", self.label, f"connection closed (code {self.close_code})")
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    def _take(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for index, message in enumerate(self.received):
            if index not in self._consumed and predicate(message):
                self._consumed.add(index)
                return message
        return None

    async def receive(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        """The first not yet consumed message that matches; NoAnswer / ConnectionLost otherwise."""
        async def wait() -> dict[str, Any]:
            async with self._changed:
                while True:
                    found = self._take(predicate)
                    if found is not None:
                        return found
                    if self.closed.is_set():
                        raise ConnectionLost(f"connection closed (code {self.close_code}) while waiting for {what}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise NoAnswer(f"no {what} within {timeout:g}s") from None

    async def answer(self, request_id: int, timeout: float) -> dict[str, Any]:
        return await self.receive(lambda m: is_answer(m, request_id), timeout, f"answer to request id {request_id}")

    def answers_to(self, request_id: int) -> list[dict[str, Any]]:
        """Every message received so far that answers `request_id` (consumed or not)."""
        return [m for m in self.received if is_answer(m, request_id)]

    def arrival_of(self, message: dict[str, Any]) -> float:
        return next(t for m, t in zip(self.received, self.arrival) if m is message)

    async def wait_closed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


def is_answer(message: dict[str, Any], request_id: int) -> bool:
    # A server's own ping carries an id from the server's id space; it answers nothing.
    return message.get("id") == request_id and message.get("type") != "ping"
