"""The one door from a browser context to the network: a SOCKS5 proxy on 127.0.0.1 per context.

Chromium sends every connection of a context through its proxy (`Target.createBrowserContext`'s
`proxyServer`; Playwright adds `<-loopback>` to the bypass list, so loopback goes through it too):
navigations and each redirect hop, subresources of any frame, fetch/XHR, WebSockets and popups.
Chromium's own network stack follows redirects, so a route handler in the page never sees the
hops; a connection has to be opened for each, and this proxy sees it.

A connection passes only when its host and port are one of the task's origins, spelled as the
task spells them: `localhost` is not `127.0.0.1`, `[::1]` is not `127.0.0.1`, and a private or
loopback address is reachable only when a task's site is listed there. The proxy resolves a
listed name itself, once, and connects to the addresses it got then (a name that later resolves
elsewhere, DNS rebinding, changes nothing). What it refuses is recorded for the agent's
observation. Nothing here parses HTTP: SOCKS5 carries only the destination, then bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from typing import Iterable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
MAX_RECORDED = 20  # refused destinations kept for the next observation
HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
CHUNK = 64 * 1024

# SOCKS5 (RFC 1928) bytes this proxy uses.
VERSION = 5
NO_AUTH, NO_ACCEPTABLE = 0, 0xFF
CONNECT = 1
IPV4, DOMAIN, IPV6 = 1, 3, 4
SUCCEEDED, GENERAL_FAILURE, NOT_ALLOWED, HOST_UNREACHABLE, REFUSED, COMMAND_NOT_SUPPORTED, ADDRESS_NOT_SUPPORTED = 0, 1, 2, 4, 5, 7, 8


def canonical_host(host: str) -> str:
    """Lowercase, no brackets or trailing dot; an IP address in its one canonical spelling."""
    host = host.strip().lower().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def endpoint_of(origin: str) -> tuple[str, int] | None:
    """(host, port) of an http(s)/ws(s) origin; None for anything else."""
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return canonical_host(parts.hostname), port


def display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EgressProxy:
    """A SOCKS5 proxy on 127.0.0.1 that connects only to the given origins' hosts and ports."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.allowed = {e for e in map(endpoint_of, origins) if e is not None}
        self._addresses: dict[tuple[str, int], list[str]] = {}  # pinned at first use
        self._refused: list[str] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> "EgressProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"socks5://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def take_refused(self) -> list[str]:
        """Destinations refused since the last call (each once, in order)."""
        refused, self._refused = self._refused, []
        return refused

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one connection -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            destination = await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT_S)
            if destination is None:
                return
            upstream_reader, upstream = await self._connect(*destination)
            if upstream is None:
                writer.write(_reply(upstream_reader))
                return
            self._writers.add(upstream)
            writer.write(_reply(SUCCEEDED))
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # close(): the handler's task is asyncio's own, which would log the cancellation
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            self._tasks.discard(task)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != VERSION or NO_AUTH not in methods:
            writer.write(bytes([VERSION, NO_ACCEPTABLE]))
            return None
        writer.write(bytes([VERSION, NO_AUTH]))
        version, command, _, kind = await reader.readexactly(4)
        if kind == IPV4:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == IPV6:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif kind == DOMAIN:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode("ascii", errors="replace")  # Chromium sends punycode
        else:
            writer.write(_reply(ADDRESS_NOT_SUPPORTED))
            return None
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != CONNECT:
            writer.write(_reply(COMMAND_NOT_SUPPORTED))
            return None
        return canonical_host(host), port

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader | int, asyncio.StreamWriter | None]:
        """A connection to an allowed destination, or (SOCKS reply code, None)."""
        if (host, port) not in self.allowed:
            shown = display(host, port)
            if shown not in self._refused and len(self._refused) < MAX_RECORDED:
                self._refused.append(shown)
            return NOT_ALLOWED, None
        addresses = await self._pinned(host, port)
        if not addresses:
            return HOST_UNREACHABLE, None
        for address in addresses:
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                return await asyncio.wait_for(asyncio.open_connection(address, port), CONNECT_TIMEOUT_S)
        return REFUSED, None

    async def _pinned(self, host: str, port: int) -> list[str]:
        if (host, port) not in self._addresses:
            try:
                ipaddress.ip_address(host)
                addresses = [host]
            except ValueError:
                try:
                    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError:
                    return []  # not pinned: a name that does not resolve yet may later
                addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
            self._addresses[(host, port)] = addresses
        return self._addresses[(host, port)]


def _reply(code: int) -> bytes:
    return bytes([VERSION, code, 0, IPV4, 0, 0, 0, 0, 0, 0])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the half-close on (HTTP keeps the other way open)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()
