"""pyset_order recomputes CPython's string hashes and set order for a PYTHONHASHSEED: checked against
real interpreters started with that seed (AgentGym's TextCraft command order depends on it)."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys

import pytest

from gymwire.servers.agentgym.pyset_order import set_order, str_hash

PROBE = "import json, sys; w = json.load(sys.stdin); print(json.dumps([[hash(x) for x in w], [list(set(w[:n])) for n in (5, 17, 40, 300)]]))"


def words() -> list[str]:
    rng = random.Random(1)
    letters = string.ascii_lowercase + " ,"
    made = [f"craft {rng.randint(1, 9)} {''.join(rng.choice(letters) for _ in range(rng.randint(0, 40)))}" for _ in range(300)]
    return made + ["", "a", "abcdefg", "abcdefgh", "abcdefghi", "craft 1 stick using 2 planks"]


@pytest.mark.parametrize("seed", [0, 1, 42, 12345, 2**32 - 1])
def test_hashes_and_set_order_equal_a_real_interpreters(seed):
    sample = words()
    ran = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(sample), capture_output=True, text=True,
                         env={"PYTHONHASHSEED": str(seed)}, check=True)
    hashes, orders = json.loads(ran.stdout)
    assert hashes == [str_hash(word, seed) for word in sample]
    for listed, n in zip(orders, (5, 17, 40, 300)):
        assert listed == set_order(sample[:n], seed=seed)
    assert set_order(sample[:40] * 2, {w: str_hash(w, seed) for w in sample}) == orders[2]  # repeats change nothing
