"""Hostile actions for any text environment, from a seed: what a policy exploring millions of
actions will send sooner or later. `must_cover(verbs)` are the cases every environment gets
(very long, huge numbers, control characters, NUL, unicode, RTL, nested brackets, ids out of
range); `generated(verbs, n, seed)` adds random mixes of them with the environment's own verbs.
"""

from __future__ import annotations

import random

LONG = 60_000  # under the server's default max_action_bytes (64 KiB)
HUGE_DIGITS = "9" * 5000  # int() refuses strings past 4300 digits

NUMBERS = [
    HUGE_DIGITS, "-" + HUGE_DIGITS, "0", "-1", "2147483648", "18446744073709551616", "1e309", "NaN", "inf",
    "0x7fffffff", "1_000", "²", "٣", "१२३", "１２", "⑤", "Ⅻ", "3.5", "+7", "00000000000000000000001",
]
WORDS = [
    "", " ", "\x00", "\x00" * 100, "\x1b[31mred\x1b[0m", "\r\n\r\n", "\t\t", "\x7f\x08\x0c", "\u202eevil\u202c",
    "\u200b\u200d\ufeff", "e\u0301\u0301\u0301\u0301", "𝕳𝖊𝖑𝖑𝖔 🧪🔥", "中文字符", "مرحبا", "שלום", "\ufffd",
    "'; DROP TABLE x; --", "${jndi:ldap://127.0.0.1/a}", "{{7*7}}", "%s%s%n", "../../../../etc/passwd",
    "<script>alert(1)</script>", "http://127.0.0.1:1/", "file:///etc/passwd", "\\x00\\n", "null", "None", "[]", "{}",
]
FRAMES = [
    "{verb} {arg}", "{verb} [{arg}]", "{verb} [{arg}] [{arg2}]", "{verb} [{arg}] [{arg2}] [{arg3}]", "Action: {verb} {arg}",
    "Thought: {arg2}\nAction: {verb} {arg}", "```{verb} [{arg}]```", "{arg}", "{verb}{arg}", "{verb} {arg} using {arg2}, {arg3}",
    "<{verb}>{arg}</{verb}>", "<{verb}>{arg}", "{verb} to {arg}", "{verb} {arg} in {arg2}",
]


def must_cover(verbs: list[str]) -> list[str]:
    """The cases every environment gets, whatever the seed."""
    verb = verbs[0]
    cases = [
        "a" * LONG,
        f"{verb} [{'x' * LONG}]",
        f"{verb} {'x ' * (LONG // 2)}",
        f"{verb} [{HUGE_DIGITS}]",
        f"{verb} {HUGE_DIGITS}",
        f"Action: {HUGE_DIGITS}",
        HUGE_DIGITS,
        f"{verb} [1] [{'z' * LONG}]",
        f"{verb} [1] [{'z' * 10_000}] [0]",
        "\x00" * 1000,
        f"{verb} \x00\x01\x02\x1b\x7f",
        "\u202e" + verb + " [1]",
        "[" * 10_000 + "]" * 10_000,
        f"{verb} " + "[" * 5000 + "1" + "]" * 5000,
        "(" * 10_000,
        "Action:" * 5000,
        "```" * 5000,
        "\n" * LONG,
        "<search>" * 5000,
        "<python>" * 5000,
        "<answer>" * 5000,
        f"{verb} [-1]",
        f"{verb} [0]",
        f"{verb} [2147483648]",
        f"{verb} [²]",
        f"{verb} [١٢]",
        f"{verb} [１２]",
        "🧪" * 10_000,
        "e\u0301" * 10_000,
        "",
        " ",
    ]
    cases += [f"{v} [{HUGE_DIGITS}]" for v in verbs[1:]] + [f"{v} {'y' * LONG}" for v in verbs[1:]]
    cases += [f"{v} {HUGE_DIGITS} thing" for v in verbs] + [f"{v} thing using {HUGE_DIGITS} thing, {HUGE_DIGITS}x thing" for v in verbs]
    cases += [f"<{v}>{'q ' * (LONG // 2)}</{v}>" for v in verbs]
    return cases


def generated(verbs: list[str], n: int, seed: int) -> list[str]:
    """`must_cover(verbs)` then random mixes of frames, verbs, numbers and words, `n` in all."""
    rng = random.Random(seed)
    cases = must_cover(verbs)

    def piece() -> str:
        kind = rng.random()
        if kind < 0.35:
            return rng.choice(NUMBERS)
        if kind < 0.7:
            return rng.choice(WORDS)
        if kind < 0.8:
            return rng.choice(verbs)
        return "".join(chr(rng.choice([rng.randrange(0, 0x20), rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0xD7FF), rng.randrange(0xE000, 0x10FFFF)])) for _ in range(rng.randrange(1, 40)))

    while len(cases) < n:
        frame = rng.choice(FRAMES)
        verb = rng.choice(verbs).upper() if rng.random() < 0.1 else rng.choice(verbs)
        action = frame.format(verb=verb, arg=piece(), arg2=piece(), arg3=piece())
        if rng.random() < 0.05:
            action = action * rng.randrange(2, 200)
        cases.append(action)
    return cases[:n] if n >= len(must_cover(verbs)) else cases
