"""The 40 BabyAI levels AgentGym plays, and how a task index picks a level and a seed.

AgentGym's rule: level = index mod 40, seed = index div 40. The train split uses seeds from 0;
the test split uses the same rule from `TEST_SEED_BASE`, so no test episode is also a train episode.
"""

from __future__ import annotations

# Order is AgentGym's (agentenv-babyai `all_levels`, 1-based there). `GoToObjS6` was v0 in the
# minigrid AgentGym pinned and is v1 in minigrid 3.x.
LEVELS: tuple[str, ...] = (
    "BabyAI-GoToRedBallGrey-v0",
    "BabyAI-GoToRedBall-v0",
    "BabyAI-GoToRedBallNoDists-v0",
    "BabyAI-GoToObjS6-v1",
    "BabyAI-GoToLocalS8N7-v0",
    "BabyAI-GoToObjMazeS7-v0",
    "BabyAI-GoToImpUnlock-v0",
    "BabyAI-GoToSeqS5R2-v0",
    "BabyAI-GoToRedBlueBall-v0",
    "BabyAI-GoToDoor-v0",
    "BabyAI-GoToObjDoor-v0",
    "BabyAI-Open-v0",
    "BabyAI-OpenRedDoor-v0",
    "BabyAI-OpenDoorLoc-v0",
    "BabyAI-OpenRedBlueDoorsDebug-v0",
    # Strict: with minigrid 3.2's verifier, "open A, then open B" fails the moment A opens (the
    # toggle is re-checked against B), so its sequence missions (about 70% of seeds) are
    # unsolvable. Kept for parity with AgentGym; the test split's two tasks are single doors.
    "BabyAI-OpenDoorsOrderN4Debug-v0",
    "BabyAI-Pickup-v0",
    "BabyAI-UnblockPickup-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-PickupDistDebug-v0",
    "BabyAI-PickupAbove-v0",
    "BabyAI-PutNextLocalS6N4-v0",
    "BabyAI-PutNextS7N4Carrying-v0",
    "BabyAI-Unlock-v0",
    "BabyAI-UnlockLocalDist-v0",
    "BabyAI-KeyInBox-v0",
    "BabyAI-UnlockPickupDist-v0",
    "BabyAI-BlockedUnlockPickup-v0",
    "BabyAI-UnlockToUnlock-v0",
    "BabyAI-ActionObjDoor-v0",
    "BabyAI-FindObjS7-v0",
    "BabyAI-KeyCorridorS6R3-v0",
    "BabyAI-OneRoomS20-v0",
    "BabyAI-MoveTwoAcrossS8N9-v0",
    "BabyAI-SynthS5R2-v0",
    "BabyAI-SynthLoc-v0",
    "BabyAI-SynthSeq-v0",
    "BabyAI-MiniBossLevel-v0",
    "BabyAI-BossLevel-v0",
    "BabyAI-BossLevelNoUnlock-v0",
)

TRAIN_SEEDS = 10_000
TEST_TASKS = 90
TEST_SEED_BASE = 1_000_000
SPLITS: dict[str, int] = {"train": len(LEVELS) * TRAIN_SEEDS, "test": TEST_TASKS}


def level_and_seed(split: str, index: int) -> tuple[str, int]:
    """The level id and reset seed of task `index` of `split` (split and index already validated)."""
    seed = index // len(LEVELS)
    if split == "test":
        seed += TEST_SEED_BASE
    return LEVELS[index % len(LEVELS)], seed
