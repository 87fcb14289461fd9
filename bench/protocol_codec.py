"""Codec benchmark: what one step costs to encode and decode, and how decoders take garbage.

    python bench/protocol_codec.py [--frames 100000] [--seed 0] [--out bench/results/protocol_codec.json]

Part 1 times encode + decode of a typical step request and step result (a ~300-character
observation, a small info map) in msgpack and JSON, and prints the msgpack/JSON cost ratio; also a
step result carrying a 16 KiB image, where the encodings differ most.
Part 2 decodes random frames (random bytes, mutated valid frames, random JSON and msgpack
structures, message-shaped maps with random fields) and counts typed errors (ProtocolError, by
code), successes and untyped exceptions; the last must be 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
import timeit
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import msgpack

from gymwire.protocol import (
    MESSAGE_TYPES,
    Codec,
    Encoding,
    Error,
    Hello,
    Image,
    Observation,
    Open,
    ProtocolError,
    Step,
    StepBatch,
    StepResult,
    TaskRef,
)
from gymwire.protocol.messages import BatchStep, EpisodeMetrics

SESSION = "s-5f0c9a1e2b7d4c83"
OBSERVATION_TEXT = (
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 4, a cabinet 3, "
    "a cabinet 2, a cabinet 1, a countertop 1, a garbagecan 1, a handtowelholder 2, a handtowelholder 1, "
    "a sinkbasin 2, a sinkbasin 1, a toilet 1, a toiletpaperhanger 1, and a towelholder 1. "
    "Your task is to: put some spraybottle on toilet."
)
TYPICAL_STEP = Step(
    id=1042, session=SESSION, seq=7, action="Thought: the spraybottle may be in a cabinet.\nAction: go to cabinet 1"
)
TYPICAL_RESULT = StepResult(
    id=1042,
    session=SESSION,
    seq=7,
    observation=Observation(text=OBSERVATION_TEXT),
    reward=0.0,
    info={"turn": 7, "valid_action": True, "admissible": ["go to cabinet 1", "look", "inventory"]},
)
# Where the encodings differ most: image bytes travel raw in msgpack, as base64 text in JSON.
IMAGE_RESULT = TYPICAL_RESULT.model_copy(
    update={
        "observation": Observation(
            text=OBSERVATION_TEXT, images=[Image(width=64, height=64, data=random.Random(0).randbytes(16 * 1024))]
        )
    }
)
MUTATION_SEEDS = [
    TYPICAL_STEP,
    TYPICAL_RESULT,
    Hello(id=1, capabilities=["batch", "resume"], token="t0ken"),
    Open(id=2, env="guess", task=TaskRef(split="train", index=3), options={"low": 1}, max_turns=7, deadline_ms=500),
    StepBatch(id=3, steps=[BatchStep(session=SESSION, seq=1, action="a"), BatchStep(session="s2", seq=4, action="b")]),
    StepResult(
        id=4, session=SESSION, seq=9, observation=Observation(text="done", data={"k": [1, 2]}), reward=1.0,
        terminated=True, metrics=EpisodeMetrics(success=True, score=1.0, turns=9, total_reward=1.0),
    ),
    Error(id=5, code=20, name="CAPACITY", message="full", retryable=True, retry_after_ms=100),
]


def time_per_call_us(func: Callable[[], Any], repeat: int = 7) -> float:
    """Best-of-`repeat` mean time of one call, in microseconds."""
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def codec_costs() -> dict[str, Any]:
    costs: dict[str, Any] = {}
    for label, message in (
        ("step_request", TYPICAL_STEP), ("step_result", TYPICAL_RESULT), ("image_result", IMAGE_RESULT)
    ):
        row: dict[str, Any] = {}
        for encoding in (Encoding.MSGPACK, Encoding.JSON):
            codec = Codec(encoding)
            frame = codec.encode(message)
            assert codec.decode(frame) == message
            encode_us = time_per_call_us(lambda: codec.encode(message))
            decode_us = time_per_call_us(lambda: codec.decode(frame))
            row[encoding.value] = {
                "frame_bytes": len(frame if isinstance(frame, bytes) else frame.encode()),
                "encode_us": round(encode_us, 2),
                "decode_us": round(decode_us, 2),
                "total_us": round(encode_us + decode_us, 2),
            }
        row["ratio_msgpack_over_json"] = round(row["msgpack"]["total_us"] / row["json"]["total_us"], 3)
        costs[label] = row
    return costs


# ----------------------------------------------------------------------------- random frames


def random_scalar(rng: random.Random) -> Any:
    pick = rng.randrange(9)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.randint(-(2**63), 2**64 - 1)
    if pick == 3:
        return rng.choice([0, 1, -1, 2**53, 2**53 - 1, 1.0, float("nan"), float("inf"), 1e308])
    if pick == 4:
        return rng.uniform(-1e6, 1e6)
    if pick == 5:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(12)))
    if pick == 6:
        return rng.choice(sorted(MESSAGE_TYPES))
    if pick == 7:
        return rng.randbytes(rng.randrange(12))
    return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(6)))


def random_structure(rng: random.Random, depth: int = 0) -> Any:
    if depth > 4 or rng.random() < 0.4:
        return random_scalar(rng)
    if rng.random() < 0.5:
        return [random_structure(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {random_key(rng): random_structure(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_key(rng: random.Random) -> str:
    return rng.choice(["type", "id", "session", "seq", "action", "observation", "text", "x", ""])


def json_safe(value: Any) -> Any:
    """Replace what JSON cannot carry (bytes, ext types) so the frame reaches the JSON decoder."""
    if isinstance(value, (bytes, msgpack.ExtType)):
        return repr(value)
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    return value


def message_shaped(rng: random.Random) -> dict[str, Any]:
    seed = rng.choice(MUTATION_SEEDS).model_dump(exclude_none=True)
    for _ in range(rng.randrange(1, 4)):
        field = rng.choice(sorted(seed))
        action = rng.randrange(3)
        if action == 0 and field != "type":
            del seed[field]
        elif action == 1:
            seed[field] = random_structure(rng)
        else:
            seed[random_key(rng) + str(rng.randrange(3))] = random_structure(rng)
    return seed


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randrange(1, 6)):
        choice = rng.randrange(4)
        if choice == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice == 1:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        elif choice == 2 and data:
            del data[rng.randrange(len(data))]
        else:
            data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


def random_frames(rng: random.Random, count: int) -> list[tuple[str, Codec, bytes | str]]:
    """(kind, codec, frame) triples, the kinds in equal shares, both encodings."""
    codecs = {Encoding.MSGPACK: Codec(Encoding.MSGPACK), Encoding.JSON: Codec(Encoding.JSON)}
    valid = {e: [c.encode(m) for m in MUTATION_SEEDS] for e, c in codecs.items()}
    frames: list[tuple[str, Codec, bytes | str]] = []
    for i in range(count):
        encoding = Encoding.MSGPACK if i % 2 == 0 else Encoding.JSON
        codec = codecs[encoding]
        kind = ("random_bytes", "mutated_valid", "random_structure", "message_shaped")[(i // 2) % 4]
        if kind == "random_bytes":
            frame: bytes | str = rng.randbytes(rng.randrange(200))
        elif kind == "mutated_valid":
            original = rng.choice(valid[encoding])
            mutated = mutate(rng, original if isinstance(original, bytes) else original.encode())
            frame = mutated if codec.binary else mutated.decode("utf-8", "surrogateescape")
        else:
            obj = random_structure(rng) if kind == "random_structure" else message_shaped(rng)
            if codec.binary:
                try:
                    frame = msgpack.packb(obj, use_bin_type=True)
                except (ValueError, OverflowError, TypeError):  # e.g. an int the packer cannot hold
                    frame = rng.randbytes(8)
            else:
                frame = json.dumps(json_safe(obj), ensure_ascii=rng.random() < 0.5)
        frames.append((kind, codec, frame))
    return frames


def fuzz_decoders(count: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    frames = random_frames(rng, count)
    outcomes: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    untyped: list[str] = []
    started = time.perf_counter()
    for kind, codec, frame in frames:
        try:
            codec.decode(frame)
            outcome = "success"
        except ProtocolError as error:
            outcome = error.code.name
        except Exception as exc:  # what the benchmark exists to catch
            outcome = "UNTYPED"
            if len(untyped) < 10:
                untyped.append(f"{kind} {codec.encoding.value}: {type(exc).__name__}: {exc}"[:300])
        outcomes[outcome] += 1
        by_kind.setdefault(kind, Counter())[outcome] += 1
    elapsed = time.perf_counter() - started
    successes = outcomes.pop("success", 0)
    untyped_count = outcomes.pop("UNTYPED", 0)
    return {
        "frames": count,
        "seed": seed,
        "successes": successes,
        "typed_errors": sum(outcomes.values()),
        "typed_errors_by_code": dict(sorted(outcomes.items())),
        "untyped_exceptions": untyped_count,
        "untyped_examples": untyped,
        "by_kind": {kind: dict(sorted(counter.items())) for kind, counter in by_kind.items()},
        "decode_us_mean": round(elapsed / count * 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="random frames to decode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "protocol_codec.json")
    args = parser.parse_args(argv)

    costs = codec_costs()
    print("encode + decode cost (best of 7, microseconds)")
    print(f"{'message':<14}{'encoding':<10}{'bytes':>7}{'encode':>9}{'decode':>9}{'total':>9}")
    for label, row in costs.items():
        for encoding in ("msgpack", "json"):
            c = row[encoding]
            print(f"{label:<14}{encoding:<10}{c['frame_bytes']:>7}{c['encode_us']:>9}{c['decode_us']:>9}{c['total_us']:>9}")
        print(f"{label:<14}ratio msgpack/json = {row['ratio_msgpack_over_json']}")

    fuzz = fuzz_decoders(args.frames, args.seed)
    print(f"\ndecoded {fuzz['frames']} random frames (seed {fuzz['seed']}, {fuzz['decode_us_mean']} us each):")
    print(f"  successes:          {fuzz['successes']}")
    print(f"  typed errors:       {fuzz['typed_errors']}  {fuzz['typed_errors_by_code']}")
    print(f"  UNTYPED exceptions: {fuzz['untyped_exceptions']}")
    for example in fuzz["untyped_examples"]:
        print(f"    {example}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "protocol_codec",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "msgpack": msgpack.version,
        "codec_costs": costs,
        "fuzz": fuzz,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 1 if fuzz["untyped_exceptions"] else 0


if __name__ == "__main__":
    sys.exit(main())
