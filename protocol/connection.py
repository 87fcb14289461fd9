"""The connection rules of gymwire v1, one object per role: `ServerConnection` and `ClientConnection`.

Sans-I/O, after h11 and websockets' `Protocol`: frames and the time (`now`, seconds on any monotonic
clock) go in; frames to send, requests to serve and answers to deliver come out. Nothing here
touches a socket, a task or a clock of its own, so an implementer in another language reads this
module (with `session.py` for the per-session rules) to see every rule a connection follows:
the handshake (section 4) and which browser origins may open one (GW-HANDSHAKE-8), request ids
(section 5), capability gating (GW-HANDSHAKE-5), the heartbeat (section 11.1) and the frame-size
limits of both ends (GW-LIMIT-6 to GW-LIMIT-8). The asyncio layers in `gymwire.sdk` only move frames
between these objects and the network.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import itertools
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar
from urllib.parse import urlsplit

from .codec import Codec, error_from_message, error_message, message_from_object, size_over
from .errors import ErrorCode, ProtocolError
from .messages import (
    CAPABILITIES,
    MAX_ID,
    Cancel,
    Close,
    DescribeEnv,
    EnvDescription,
    EnvInfo,
    EnvList,
    Error,
    Hello,
    Limits,
    ListEnvs,
    Message,
    Notice,
    Open,
    Opened,
    PeerInfo,
    Ping,
    Pong,
    Reset,
    Resume,
    Step,
    StepBatch,
    StepBatchResult,
    StepResult,
    Welcome,
)
from .steps import StepFields, plain_step, step_message
from .version import PROTOCOL_VERSION, negotiate_version

Handle = TypeVar("Handle")

# ----------------------------------------------------------------------------- capabilities

# Requests only a server listing the capability accepts (section 5's table); a deadline_ms needs
# `deadlines` on any request.
REQUEST_CAPABILITY = {StepBatch.TYPE: "batch", Cancel.TYPE: "cancel", Resume.TYPE: "resume"}
GATED_CAPABILITIES = frozenset((*REQUEST_CAPABILITY.values(), "deadlines"))

# What the reference client uses unless told more ("images" asks the server to send images).
CLIENT_CAPABILITIES = ("batch", "resume", "cancel", "deadlines", "heartbeat")


def server_capabilities(*, auth: bool) -> list[str]:
    """What a server offers: every capability of this version, `auth` only when it checks a token."""
    return sorted(c for c in CAPABILITIES if c != "auth" or auth)


def missing_capability(message: Message | dict[str, Any], offered: Iterable[str]) -> str | None:
    """The capability `message` needs that `offered` lacks, or None."""
    if type(message) is dict:  # a plain step (steps.step_map), which has no deadline: it needs none
        return None
    capability = REQUEST_CAPABILITY.get(message.type)
    if capability is not None and capability not in offered:
        return capability
    if getattr(message, "deadline_ms", None) is not None and "deadlines" not in offered:
        return "deadlines"
    return None


class MissingCapability(RuntimeError):
    """The server's welcome does not list a capability the call needs (GW-HANDSHAKE-5); nothing was sent."""

    def __init__(self, capability: str, message: str) -> None:
        super().__init__(message)
        self.capability = capability


# ----------------------------------------------------------------------------- heartbeat


class Liveness(enum.Enum):
    ALIVE = "alive"
    PING = "ping"  # silent for an interval: send a ping
    HALF_OPEN = "half-open"  # silent for three intervals: the peer is gone, drop the connection


class Heartbeat:
    """The one liveness policy of both ends (section 11.1): look every half interval; after an
    interval of silence, ping; after two more, the connection is half-open. Whatever is received
    sets `last_heard`."""

    __slots__ = ("interval", "last_heard")

    def __init__(self, interval_ms: int, now: float) -> None:
        self.interval = interval_ms / 1000
        self.last_heard = now

    @property
    def check_every(self) -> float:
        return self.interval / 2

    def silent_for(self, now: float) -> float:
        return now - self.last_heard

    def check(self, now: float) -> Liveness:
        silent = now - self.last_heard
        if silent > 3 * self.interval:
            return Liveness.HALF_OPEN
        if silent > self.interval:
            return Liveness.PING
        return Liveness.ALIVE


# ----------------------------------------------------------------------------- server


class ServerTimer(enum.Enum):
    """What the server's periodic look at a connection decides."""

    NOTHING = "nothing"
    NO_HELLO = "no-hello"  # GW-HANDSHAKE-7: close (1002)
    PING = "ping"
    HALF_OPEN = "half-open"  # GW-HEARTBEAT-3: drop it


# Requests the runtime serves; everything else a client may send is answered here.
SERVED_REQUESTS = (Open, Reset, Step, StepBatch, Close, Resume, Cancel)
# Close codes after a failed handshake (section 4).
CLOSE_UNSUPPORTED_VERSION = (1002, "unsupported protocol version")
CLOSE_UNAUTHORIZED = (1008, "unauthorized")
CLOSE_NO_HELLO = (1002, "no hello")
CLOSE_BAD_HELLO = (1002, "invalid hello")

ANY_ORIGIN = "*"


def origin_refusal(origins: list[str], allowed: Iterable[str]) -> str | None:
    """Why an opening handshake with these `Origin` header values is refused (GW-HANDSHAKE-8), or
    None. Browsers send Origin and let any page open a WebSocket to any address, loopback included;
    other clients send none. So a handshake that names an origin is a browser's, and is let in only
    when the operator allowed that exact origin (scheme://host[:port], as the browser writes it) or
    every origin ("*")."""
    if not origins:
        return None
    allowed = set(allowed)
    if len(origins) == 1 and (origins[0] in allowed or ANY_ORIGIN in allowed):
        return None
    shown = ", ".join(repr(o[:100]) for o in origins[:3])
    return (
        f"FORBIDDEN_ORIGIN: browser origin {shown} is not allowed to open gymwire sessions; "
        f"the server's operator may allow it with --allow-origin"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rebinding_refusal(host_header: str | None, listening_on: str) -> str | None:
    """Why a request to a server on loopback is refused because its Host names something else, or None.
    A page whose name an attacker's DNS points at 127.0.0.1 (DNS rebinding) is, to the browser, of the
    same origin as this server: its GETs carry no Origin, and it may read the answers. Its requests
    still name the attacker's host in Host, which no local client does."""
    if not _is_loopback(listening_on.strip("[]")):
        return None  # reached from other machines: which names reach it is the network's business
    try:
        named = urlsplit(f"//{host_header or ''}").hostname or ""
    except ValueError:
        named = ""
    if _is_loopback(named):
        return None
    return f"the Host header {(host_header or '')[:100]!r} does not name this machine's loopback; connect to 127.0.0.1 or localhost"


class ServerConnection(Generic[Handle]):
    """The server's side of one connection.

    `receive_frame(frame, now)` returns the request the runtime must serve (open, reset, step,
    step_batch, close, resume, cancel), or None when the frame was answered here (hello, ping,
    list_envs, describe_env, every refusal): the answers wait in `frames_to_send()`. `read` is the
    same but gives a well-formed step as its plain fields (steps.py), and `receive(message)` applies
    the rules to a message decoded elsewhere. After a failed handshake `close_with` holds the close
    code and reason, to use once the frames are sent. `inflight` maps the ids of requests being
    served to the runtime's handles for them.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        now: float,
        limits: Limits,
        capabilities: list[str],
        server: PeerInfo,
        envs: Mapping[str, EnvInfo],
        token: str | None = None,
        on_error: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.codec = codec
        self.limits = limits
        self.capabilities = capabilities
        self.server = server
        self.envs = envs
        self.token = token
        self.welcomed = False
        self.wants_images = False
        # The largest frame the client takes: its hello says (GW-LIMIT-7), else the server's own limit.
        self.peer_max_frame_bytes = limits.max_frame_bytes
        self.inflight: dict[int, Handle] = {}
        self.connected_at = now
        # Without `heartbeat` the server neither pings nor takes silence for a dead peer.
        self.heartbeat = Heartbeat(limits.heartbeat_interval_ms, now) if "heartbeat" in capabilities else None
        self.close_with: tuple[int, str] | None = None
        self.on_error = on_error  # called with the name of every error code sent (the runtime's metrics)
        self._gated = GATED_CAPABILITIES - set(capabilities)
        self._ping_ids = itertools.count(MAX_ID, -1)  # server pings count down: no clash with client ids
        self._outbox: list[bytes | str] = []

    # -- frames in

    def receive_frame(self, frame: bytes | str, now: float) -> Message | None:
        request = self.read(frame, now)
        return step_message(request) if type(request) is tuple else request

    def read(self, frame: bytes | str, now: float) -> Message | StepFields | None:
        """`receive_frame` for a runtime that serves steps as plain data: a step these rules admit
        as it is comes back as its fields (see steps.py), not as a `Step`."""
        if self.heartbeat is not None:
            self.heartbeat.last_heard = now
        try:
            obj = self.codec.decode_map(frame)
        except ProtocolError as exc:
            self.send_error(exc)
            if not self.welcomed and self._frame_is_hello(frame):  # too large a hello, say
                self.close_with = CLOSE_BAD_HELLO
            return None
        if self.welcomed:
            step = plain_step(obj)
            if step is not None and step[0] not in self.inflight:
                return step
        try:
            message = message_from_object(obj)
        except ProtocolError as exc:
            self.send_error(exc)
            if not self.welcomed and _is_hello(obj):
                self.close_with = CLOSE_BAD_HELLO
            return None
        return self.receive(message)

    def _frame_is_hello(self, frame: bytes | str) -> bool:
        try:
            return _is_hello(self.codec.decode_object(frame))
        except ProtocolError:
            return False

    def receive(self, message: Message) -> Message | None:
        try:
            return self._receive(message)
        except ProtocolError as exc:
            if exc.request_id is None:
                exc.request_id = getattr(message, "id", None)
            self.send_error(exc)
            return None

    def _receive(self, message: Message) -> Message | None:
        if isinstance(message, Pong):  # an answer, never answered; one matching no ping is ignored
            return None
        if isinstance(message, Hello):
            self._hello(message)
            return None
        if not self.welcomed:
            raise ProtocolError(ErrorCode.HANDSHAKE_REQUIRED, "send hello first and wait for welcome")
        if message.id in self.inflight:  # type: ignore[attr-defined]
            # One id, one answer (GW-REQUEST-5).
            raise ProtocolError(
                ErrorCode.INVALID_STATE, f"request id {message.id} is already in flight; use a fresh id"  # type: ignore[attr-defined]
            )
        if self._gated:
            capability = missing_capability(message, self.capabilities)
            if capability is not None:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_MESSAGE, f"this server does not support {message.type} (capability {capability!r})"
                )
        if isinstance(message, SERVED_REQUESTS):
            return message
        if isinstance(message, Ping):
            self.send(Pong(id=message.id))
        elif isinstance(message, ListEnvs):
            self.send(EnvList(id=message.id, envs=list(self.envs.values())))
        elif isinstance(message, DescribeEnv):
            self.send(EnvDescription(id=message.id, env=self.env_info(message.env)))
        else:
            raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"{message.type!r} is not a client request")
        return None

    def _hello(self, hello: Hello) -> None:
        if self.welcomed:
            raise ProtocolError(ErrorCode.INVALID_STATE, "hello was already answered on this connection")
        try:
            version = negotiate_version(hello.version, PROTOCOL_VERSION)
        except ProtocolError as exc:
            exc.request_id = hello.id
            self.send_error(exc)
            self.close_with = CLOSE_UNSUPPORTED_VERSION
            return
        if self.token is not None and not hmac.compare_digest((hello.token or "").encode(), self.token.encode()):
            self.send_error(
                ProtocolError(
                    ErrorCode.UNAUTHORIZED, "missing or wrong token; pass the server's token in hello.token", request_id=hello.id
                )
            )
            self.close_with = CLOSE_UNAUTHORIZED
            return
        self.welcomed = True
        self.wants_images = "images" in hello.capabilities
        if hello.max_frame_bytes is not None:
            self.peer_max_frame_bytes = hello.max_frame_bytes
        self.send(
            Welcome(
                id=hello.id,
                version=version,
                server=self.server,
                capabilities=self.capabilities,
                limits=self.limits,
                envs=sorted(self.envs),
            )
        )

    def env_info(self, name: str) -> EnvInfo:
        info = self.envs.get(name)
        if info is None:
            raise ProtocolError(ErrorCode.UNKNOWN_ENV, f"no environment {name!r}; this server has {sorted(self.envs)}")
        return info

    # -- requests being served

    def track(self, request_id: int, handle: Handle) -> None:
        """Count a request the runtime starts serving, within max_inflight (GW-LIMIT-3)."""
        if len(self.inflight) >= self.limits.max_inflight:
            raise ProtocolError(
                ErrorCode.CAPACITY,
                f"{len(self.inflight)} requests in flight on this connection (max_inflight={self.limits.max_inflight})",
                retry_after_ms=50,
            )
        self.inflight[request_id] = handle

    def untrack(self, request_id: int, handle: Handle) -> bool:
        """Forget a request once answered; False if `handle` no longer holds the id."""
        if self.inflight.get(request_id) is not handle:
            return False
        del self.inflight[request_id]
        return True

    # -- timers

    def check_timers(self, now: float) -> ServerTimer:
        """What to do now; call every `check_every` seconds."""
        if not self.welcomed and now - self.connected_at > self.limits.heartbeat_interval_ms / 1000:
            return ServerTimer.NO_HELLO
        if self.heartbeat is None:
            return ServerTimer.NOTHING
        liveness = self.heartbeat.check(now)
        if liveness is Liveness.HALF_OPEN:
            return ServerTimer.HALF_OPEN
        return ServerTimer.PING if liveness is Liveness.PING else ServerTimer.NOTHING

    @property
    def check_every(self) -> float:
        return self.limits.heartbeat_interval_ms / 2000

    def ping(self) -> bytes | str:
        return self.encode(Ping(id=next(self._ping_ids)))

    # -- frames out

    def send(self, message: Message) -> None:
        self._outbox.append(self.encode(message))

    def send_error(self, error: ProtocolError) -> None:
        self._outbox.append(self.encode_error(error))

    def frames_to_send(self) -> list[bytes | str]:
        frames, self._outbox = self._outbox, []
        return frames

    def encode_error(self, error: ProtocolError) -> bytes | str:
        self.on_error(error.code.name)
        return self.encode(error_message(error))

    def encode(self, message: Message | dict[str, Any]) -> bytes | str:
        """The frame of an answer (a model, or a step's answer as its wire map). Images go only to
        clients that asked for them in hello (they can be large); data an environment returned that
        cannot be encoded becomes INTERNAL; an answer larger than the client takes becomes
        ANSWER_TOO_LARGE (GW-LIMIT-7)."""
        if not self.wants_images:
            message = without_images(message)
        try:
            frame = self.codec.encode(message)
        except Exception as exc:
            unencodable = ProtocolError(
                ErrorCode.INTERNAL,
                f"the environment returned data that cannot be encoded: {exc}"[:500],
                request_id=_field(message, "id"),
                session=_field(message, "session"),
            )
            return self.codec.encode(error_message(unencodable))
        size = size_over(frame, self.peer_max_frame_bytes)
        if size is None:
            return frame
        if isinstance(message, StepBatchResult):
            return self._fit_batch(message)
        return self.codec.encode(error_message(self.answer_too_large(message, size)))

    def _fit_batch(self, batch: StepBatchResult) -> bytes | str:
        """A batch answer the client cannot take: its largest step results become ANSWER_TOO_LARGE
        errors, one by one, until it fits; the other sessions' results arrive as they are."""
        results = list(batch.results)
        sizes = {i: len(self.codec.encode(r)) for i, r in enumerate(results) if isinstance(r, StepResult)}
        for i in sorted(sizes, key=sizes.__getitem__, reverse=True):
            results[i] = error_message(self.answer_too_large(results[i], sizes[i]))
            frame = self.codec.encode(batch.model_copy(update={"results": results}))
            if size_over(frame, self.peer_max_frame_bytes) is None:
                return frame
        return self.codec.encode(error_message(self.answer_too_large(batch, len(self.codec.encode(batch)))))

    def oversize(self, message: Message) -> int | None:
        """The size of `message`'s frame when the client cannot take it, else None."""
        return size_over(self.codec.encode(without_images(message) if not self.wants_images else message), self.peer_max_frame_bytes)

    def answer_too_large(self, message: Message | dict[str, Any], size: int) -> ProtocolError:
        """What the client gets instead of an answer it cannot take: the request was carried out
        and its session stays usable (a re-sent seq is answered the same way; `resume` tells
        where the session stands)."""
        too_large = f"the {_field(message, 'type')} answer is {size} bytes, over your max_frame_bytes={self.peer_max_frame_bytes}"
        if isinstance(message, Opened):
            # Nobody could use a session whose resume token never arrived: the server closes it.
            return ProtocolError(
                ErrorCode.ANSWER_TOO_LARGE, f"{too_large}; the session was closed", request_id=message.id
            )
        return ProtocolError(
            ErrorCode.ANSWER_TOO_LARGE,
            f"{too_large}; the request was carried out: resume the session to learn where it stands, or close it",
            request_id=_field(message, "id"),
            session=_field(message, "session"),
        )


def _is_hello(obj: Any) -> bool:
    """A hello that does not validate (a token that is not a string, say) ends the handshake as a
    refused one does: answered, then closed (GW-HANDSHAKE-3)."""
    return type(obj) is dict and obj.get("type") == Hello.TYPE


def _field(message: Message | dict[str, Any], name: str) -> Any:
    """A field of an answer, a model or a wire map (a step's answer)."""
    return message.get(name) if type(message) is dict else getattr(message, name, None)


def without_images(message: Any) -> Any:
    if type(message) is dict:  # a step's answer as its wire map
        observation = message["observation"]
        if not observation.get("images"):
            return message
        return {**message, "observation": {key: value for key, value in observation.items() if key != "images"}}
    if isinstance(message, StepBatchResult):
        results = [without_images(result) for result in message.results]
        return message.model_copy(update={"results": results}) if results != message.results else message
    observation = getattr(message, "observation", None)
    if observation is not None and observation.images:
        return message.model_copy(update={"observation": observation.model_copy(update={"images": None})})
    return message


# ----------------------------------------------------------------------------- client


class ClientConnection(Generic[Handle]):
    """The client's side of a connection to one server, across reconnects.

    `hello()` opens a handshake and `welcomed(frame)` checks its answer. `request_frame(message)`
    checks a request against the welcome (capabilities, max_frame_bytes) and encodes it;
    `pending` maps the ids of requests awaiting an answer to the runtime's handles for them.
    `receive_frame(frame, now)` returns (handle, answer) for an answer to a pending request, where
    the answer is a message or, for an error or an undecodable frame naming the id, a
    ProtocolError; pings are answered into `frames_to_send()`, a drain notice sets `draining`, and
    after a goodbye notice `unanswered_at_goodbye()` fails what is still pending.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        name: str,
        url: str,
        capabilities: Iterable[str] = (),
        token: str | None = None,
    ) -> None:
        self.codec = codec  # its max_frame_bytes is the largest frame this client takes (GW-LIMIT-8)
        self.name = name
        self.url = url
        self.capabilities = sorted({*CLIENT_CAPABILITIES, *capabilities})
        self.token = token
        self.welcome: Welcome | None = None
        self.draining = False
        self.said_goodbye = False  # a goodbye came: what is pending is answered by unanswered_at_goodbye()
        self.heartbeat: Heartbeat | None = None
        self.pending: dict[int, Handle] = {}
        self._lacking = GATED_CAPABILITIES  # requests of these capabilities are checked (all, until welcomed)
        self.unmatched: list[Message] = []  # errors and notices for no pending request, to log
        self._ids = itertools.count(1)
        self._outbox: list[bytes | str] = []

    def next_id(self) -> int:
        return next(self._ids)

    # -- handshake

    def hello(self) -> bytes | str:
        return self.codec.encode(
            Hello(
                id=self.next_id(),
                version=PROTOCOL_VERSION,
                client=PeerInfo(name=self.name, version="1"),
                capabilities=self.capabilities,
                token=self.token,
                max_frame_bytes=self.codec.max_frame_bytes,
            )
        )

    def welcomed(self, frame: bytes | str, now: float) -> Welcome:
        """Take the server's answer to hello: the welcome, else raise its error."""
        reply = self.codec.decode(frame)
        if isinstance(reply, Error):
            raise error_from_message(reply)
        if not isinstance(reply, Welcome):
            raise ProtocolError(ErrorCode.BAD_FRAME, f"expected welcome, got {reply.type}")
        self.welcome = reply
        self._lacking = GATED_CAPABILITIES - set(reply.capabilities)
        self.draining = False  # a drain notice spoke of the server we were connected to before
        # Without `heartbeat` the server neither pings nor expects pings: silence is no sign of a
        # half-open connection, so there is nothing to watch.
        self.heartbeat = Heartbeat(reply.limits.heartbeat_interval_ms, now) if self.supports("heartbeat") else None
        return reply

    @property
    def limits(self) -> Limits:
        return self.welcome.limits if self.welcome else Limits()

    # -- capabilities

    def supports(self, capability: str) -> bool:
        """Whether the server's welcome lists `capability`: the client uses no other (GW-HANDSHAKE-5)."""
        return self.welcome is not None and capability in self.welcome.capabilities

    def require(self, capability: str, instead: str | None = None) -> None:
        if not self.supports(capability):
            raise MissingCapability(
                capability,
                f"the server at {self.url} does not support {capability!r} (not in its welcome); "
                f"{instead or _INSTEAD[capability]}",
            )

    def check_capabilities(self, message: Message | dict[str, Any]) -> None:
        capability = missing_capability(message, self.welcome.capabilities if self.welcome else ())
        if capability is not None:
            self.require(capability)

    # -- requests out

    def request_frame(self, message: Message | dict[str, Any]) -> bytes | str:
        """The frame of a request the server can take (a model, or a step as its wire map:
        steps.step_map); MissingCapability or FRAME_TOO_LARGE otherwise."""
        if self._lacking:
            self.check_capabilities(message)
        frame = self.codec.encode(message)
        limit = self.limits.max_frame_bytes
        if size_over(frame, limit) is not None:
            # The server's FRAME_TOO_LARGE could not name the request (it cannot read the id), so
            # the request would wait forever: refuse it here (GW-LIMIT-6).
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"{_field(message, 'type')} exceeds the server's max_frame_bytes={limit}; shorten the action or split the batch",
                request_id=_field(message, "id"),
            )
        return frame

    # -- frames in

    def receive_frame(self, frame: bytes | str, now: float) -> tuple[Handle, Message | ProtocolError] | None:
        if self.heartbeat is not None:
            self.heartbeat.last_heard = now
        try:
            message = self.codec.decode(frame)
        except ProtocolError as exc:
            if exc.code is ErrorCode.FRAME_TOO_LARGE:
                # An answer this client cannot take still ends its call, typed (GW-LIMIT-8).
                exc = self._answer_too_large(frame, exc)
            # The answer is lost, but if its id is legible its request fails now rather than never.
            handle = self.pending.pop(exc.request_id, None) if exc.request_id is not None else None
            if handle is None:
                self.unmatched.append(error_message(exc))
                return None
            return handle, exc
        if type(message) is StepResult:  # the common answer: none of the checks below apply
            handle = self.pending.pop(message.id, None)
            return None if handle is None else (handle, message)
        if isinstance(message, Ping):
            self._outbox.append(self.codec.encode(Pong(id=message.id)))
            return None
        if isinstance(message, Notice):
            if message.kind in ("drain", "goodbye"):
                self.draining = True
            self.said_goodbye = message.kind == "goodbye"
            self.unmatched.append(message)
            return None
        request_id = getattr(message, "id", None)
        handle = self.pending.pop(request_id, None) if request_id is not None else None
        if handle is None:
            if isinstance(message, Error):
                self.unmatched.append(message)
            return None
        return handle, (error_from_message(message) if isinstance(message, Error) else message)

    def unanswered_at_goodbye(self) -> list[tuple[Handle, ProtocolError]]:
        """After a goodbye the server sends nothing more (GW-DRAIN-6): every request still pending
        fails now, DRAINING, instead of waiting for a reconnect to a server that is gone."""
        self.said_goodbye = False
        failed = [
            (handle, ProtocolError(
                ErrorCode.DRAINING,
                "the server said goodbye before answering; its sessions are gone: open new ones on another server",
                request_id=request_id, retry_after_ms=1000,
            ))
            for request_id, handle in self.pending.items()
        ]  # fmt: skip
        self.pending.clear()
        return failed

    def _answer_too_large(self, frame: bytes | str, refused: ProtocolError) -> ProtocolError:
        return ProtocolError(
            ErrorCode.ANSWER_TOO_LARGE,
            f"the server sent an answer this client cannot take ({refused.message}); the request was carried out: "
            "resume the session to learn where it stands, or raise the client's max_frame_bytes",
            request_id=self.codec.request_id_of(frame),
        )

    def frames_to_send(self) -> list[bytes | str]:
        frames, self._outbox = self._outbox, []
        return frames

    # -- timers

    def check_timers(self, now: float) -> Liveness:
        """Call every `heartbeat.check_every` seconds; ALIVE when there is no heartbeat."""
        return Liveness.ALIVE if self.heartbeat is None else self.heartbeat.check(now)

    def ping(self) -> bytes | str:
        return self.codec.encode(Ping(id=self.next_id()))


_INSTEAD = {
    "batch": "step the sessions one by one",
    "cancel": "wait for the request's answer instead",
    "resume": "close the session and open a new one",
    "deadlines": "call without deadline_ms",
}
