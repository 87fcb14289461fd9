"""A server connection alone, over an in-memory transport: no socket, no listener. The connection
reads, has the rules answer, dispatches to the server and writes; its end detaches its sessions."""

from __future__ import annotations

import asyncio

import pytest

from gymwire.protocol import ClientConnection, Close, Codec, ErrorCode, Hello, ListEnvs, Open, ProtocolError, Step, TaskRef
from gymwire.sdk.server import GymServer
from gymwire.sdk.serving.connections import memory_transports
from gymwire.servers.guess import GuessEnv


class MemoryClient:
    """The client's rules (protocol.ClientConnection) driven by hand over the client's end."""

    def __init__(self, end, encoding: str) -> None:
        self.end = end
        self.rules: ClientConnection[int] = ClientConnection(Codec(encoding), name="memory", url="memory://")

    async def handshake(self) -> None:
        await self.end.send(self.rules.hello())
        self.rules.welcomed(await asyncio.wait_for(self.end.recv(), 5), 0.0)

    async def ask(self, message):
        self.rules.pending[message.id] = message.id
        await self.end.send(self.rules.request_frame(message))
        while True:
            answered = self.rules.receive_frame(await asyncio.wait_for(self.end.recv(), 10), 0.0)
            if answered is not None:
                _, answer = answered
                if isinstance(answer, ProtocolError):
                    raise answer
                return answer


async def test_a_connection_serves_a_whole_episode_over_memory_and_detaches_its_sessions():
    server = GymServer([GuessEnv], port=0)
    for encoding, subprotocol in (("msgpack", "gymwire.v1+msgpack"), ("json", "gymwire.v1+json")):
        server_end, client_end = memory_transports()
        serving = asyncio.ensure_future(server.serve_connection(server_end, subprotocol))
        client = MemoryClient(client_end, encoding)
        await client.handshake()
        assert [info.name for info in (await client.ask(ListEnvs(id=client.rules.next_id()))).envs] == ["guess"]
        opened = await client.ask(Open(id=client.rules.next_id(), env="guess", task=TaskRef(split="test", index=0), options={"low": 1, "high": 3}))
        assert "1 to 3" in opened.observation.text and server.sessions[opened.session].owner is not None
        assert server.stats()["connections"] == 1
        seq = 0
        for guess in "123":
            seq += 1
            result = await client.ask(Step(id=client.rules.next_id(), session=opened.session, seq=seq, action=guess))
            if result.terminated:
                break
        assert result.terminated and result.metrics.success
        with pytest.raises(ProtocolError) as refused:  # a typed error, and the connection lives on
            await client.ask(Step(id=client.rules.next_id(), session=opened.session, seq=seq + 1, action="2"))
        assert refused.value.code is ErrorCode.EPISODE_FINISHED
        second = await client.ask(Open(id=client.rules.next_id(), env="guess", task=TaskRef(seed=1)))
        await client.ask(Close(id=client.rules.next_id(), session=second.session))
        client_end.abort()  # the peer goes: the loop ends, its session waits for a resume
        await asyncio.wait_for(serving, 5)
        assert server.stats()["connections"] == 0 and server.sessions[opened.session].owner is None
    await server.stop(drain_timeout=0)


async def test_a_refused_hello_is_answered_then_closed_by_the_connection():
    server = GymServer([GuessEnv], port=0, token="secret")
    server_end, client_end = memory_transports()
    serving = asyncio.ensure_future(server.serve_connection(server_end, "gymwire.v1+json"))
    codec = Codec("json")
    await client_end.send(codec.encode(Hello(id=1, client={"name": "x", "version": "0"}, token="wrong")))
    refusal = codec.decode(await asyncio.wait_for(client_end.recv(), 5))
    assert refusal.type == "error" and refusal.name == "UNAUTHORIZED"
    await asyncio.wait_for(serving, 5)
    assert server_end.closed_with == (1008, "unauthorized")  # policy violation, after the answer
    await server.stop(drain_timeout=0)


async def test_frames_served_in_place_wait_behind_an_answer_that_waits_for_room():
    """A transport that pushes frames (picows) has each served from its callback while the
    connection's loop waits; when an answer cannot be sent at once (a full buffer), the frames
    behind it are refused there and go through the loop, after it: the answers keep their order,
    even for a frame that comes just as room is made, before the waiting answer has gone."""
    server = GymServer([GuessEnv], port=0)
    server_end, client_end = memory_transports()
    room = asyncio.Event()
    full = False
    send_now = server_end.send_now

    def squeezed_send_now(frame):
        return False if full else send_now(frame)

    async def send(frame):
        await room.wait()
        send_now(frame)

    server_end.serve_in_place = None  # as a picows transport: the connection sets it
    server_end.send_now, server_end.send = squeezed_send_now, send
    serving = asyncio.ensure_future(server.serve_connection(server_end, "gymwire.v1+msgpack"))
    client = MemoryClient(client_end, "msgpack")
    await client.handshake()
    opened = await client.ask(Open(id=client.rules.next_id(), env="guess", task=TaskRef(seed=1)))
    second = await client.ask(Open(id=client.rules.next_id(), env="guess", task=TaskRef(seed=2)))
    serve_in_place = server_end.serve_in_place
    assert serve_in_place is not None

    def step(session: str, request_id: int) -> bytes:
        return client.rules.codec.encode(Step(id=request_id, session=session, seq=1, action="1"))

    full = True
    assert serve_in_place(step(opened.session, 101)) is True  # served; its answer waits for room
    assert serve_in_place(step(second.session, 102)) is False  # behind it: left to the loop
    server_end.inbox.put_nowait(step(second.session, 102))
    full = False
    room.set()
    assert serve_in_place(client.rules.codec.encode(ListEnvs(id=103))) is False  # the first still waits
    server_end.inbox.put_nowait(client.rules.codec.encode(ListEnvs(id=103)))
    ids = [client.rules.codec.decode(await asyncio.wait_for(client_end.recv(), 5)).id for _ in range(3)]
    assert ids == [101, 102, 103]
    client_end.abort()
    await asyncio.wait_for(serving, 5)
    await server.stop(drain_timeout=0)
