"""The iteration order CPython gives a set of strings, for a chosen PYTHONHASHSEED.

AgentGym's TextCraft server builds its crafting commands in Python sets of strings, so the order it
shows them in, and which distractors it draws, follow the string hashes of its own process: they
depend on PYTHONHASHSEED (random by default, so they change at every start of that server unless it
is fixed). To show what such a server shows, this module recomputes those hashes (CPython's SipHash
keyed by the seed, as Python/pyhash.c and Python/bootstrap_hash.c do) and replays CPython's set
insertion (Objects/setobject.c: linear probing, then perturbed jumps; growth when 3/5 full) to find
the order `list(a_set)` gives.

Exact for ASCII strings (each kind of str is hashed over its internal buffer; recipe text is ASCII)
in CPython 3.11 and later, whose string hash is SipHash-1-3 (3.10 and earlier used SipHash-2-4:
not covered). Seed 0 means what PYTHONHASHSEED=0 means: no randomization (a zero key).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

__all__ = ["str_hash", "set_order"]

_MASK64 = (1 << 64) - 1
_LINEAR_PROBES = 9
_PERTURB_SHIFT = 5
_MIN_SIZE = 8


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK64


@lru_cache(maxsize=64)
def _key(seed: int) -> tuple[int, int]:
    """The SipHash key CPython derives from PYTHONHASHSEED (its linear congruential byte stream)."""
    if seed == 0:
        return 0, 0
    x = seed & 0xFFFFFFFF
    out = bytearray()
    for _ in range(16):
        x = (x * 214013 + 2531011) & 0xFFFFFFFF
        out.append((x >> 16) & 0xFF)
    return int.from_bytes(out[:8], "little"), int.from_bytes(out[8:], "little")


def _siphash13(k0: int, k1: int, data: bytes) -> int:
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK64; v2 = (v2 + v3) & _MASK64  # noqa: E702
            v1 = _rotl(v1, 13) ^ v0; v3 = _rotl(v3, 16) ^ v2  # noqa: E702
            v0 = _rotl(v0, 32)
            v2 = (v2 + v1) & _MASK64; v0 = (v0 + v3) & _MASK64  # noqa: E702
            v1 = _rotl(v1, 17) ^ v2; v3 = _rotl(v3, 21) ^ v0  # noqa: E702
            v2 = _rotl(v2, 32)

    size = len(data)
    whole = size - size % 8
    for start in range(0, whole, 8):
        word = int.from_bytes(data[start : start + 8], "little")
        v3 ^= word
        rounds(1)
        v0 ^= word
    last = ((size & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= last
    rounds(1)
    v0 ^= last
    v2 ^= 0xFF
    rounds(3)
    return v0 ^ v1 ^ v2 ^ v3


def str_hash(text: str, seed: int) -> int:
    """hash(text) in a CPython (>= 3.11) process started with PYTHONHASHSEED=seed (ASCII text)."""
    if not text:
        return 0
    k0, k1 = _key(seed)
    value = _siphash13(k0, k1, text.encode("ascii"))
    signed = value - (1 << 64) if value >> 63 else value
    return -2 if signed == -1 else signed


def _probe(table: list, mask: int, hashed: int) -> int:
    """The slot CPython's set puts a new key with this hash in (no deletions happen here)."""
    perturb = hashed & _MASK64
    i = perturb & mask
    while True:
        if table[i] is None:
            return i
        if i + _LINEAR_PROBES <= mask:
            for j in range(i + 1, i + _LINEAR_PROBES + 1):
                if table[j] is None:
                    return j
        perturb >>= _PERTURB_SHIFT
        i = (i * 5 + 1 + perturb) & mask


def set_order(strings: Iterable[str], hashes: dict[str, int] | None = None, *, seed: int = 0) -> list[str]:
    """`list(s)` for `s = set(); s.add(x) for x in strings` in a process with that hash seed.

    `hashes` may give precomputed hashes (a dict by string) to skip hashing."""
    mask = _MIN_SIZE - 1
    table: list = [None] * _MIN_SIZE
    fill = 0
    seen: set[str] = set()
    for text in strings:
        if text in seen:
            continue  # adding a member changes nothing
        seen.add(text)
        hashed = hashes[text] if hashes is not None else str_hash(text, seed)
        table[_probe(table, mask, hashed)] = (hashed, text)
        fill += 1
        if fill * 5 >= mask * 3:
            minused = fill * 2 if fill > 50000 else fill * 4
            size = _MIN_SIZE
            while size <= minused:
                size <<= 1
            old, mask = table, size - 1
            table = [None] * size
            for entry in old:
                if entry is not None:
                    table[_probe(table, mask, entry[0])] = entry
    return [entry[1] for entry in table if entry is not None]
