"""Trajectories as token rows for supervised learning, laid out exactly as the model meets them.

A row is what `gymwire eval` and the trainer feed the model (trainers/chat.ChatFormat: the chat
template's prompt for the first message, then each reply, its end-of-turn token and the template's
rendering of the next observation), with `completion_mask` 1 on the agent's tokens only: each
learned reply and the end-of-turn token that stops it, never the instructions or observations.

Rows are cut to `max_tokens`: an episode that does not fit goes on in a next row that starts
again from the first message (it states the goal) and the last `history` turns as context. A turn
whose label differs from the reply executed (DAgger) cannot sit in the sequence (the observation
after it followed the executed reply), so it becomes a row of its own: its context, then the label.
A learner that repeats one refused action meets the same state with the same recent history many
times; that row is learned once per episode, not once per repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .trajectories import Trajectory

__all__ = ["TokenRow", "token_rows", "conversation_tokens"]


@dataclass
class TokenRow:
    input_ids: list[int]
    completion_mask: list[int]
    item_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "completion_mask": self.completion_mask, "item_id": self.item_id}


class _Layout:
    """The token pieces of one trajectory: the head, each turn's reply (executed and learned) and
    the observation after it."""

    def __init__(self, chat: Any, trajectory: Trajectory) -> None:
        self.chat = chat
        self.head = chat.prompt(trajectory.first_message())
        stop = chat.turn_close_ids[:1]  # the token generation stops on (ChatML: <|im_end|>)
        self.replies = [chat.encode(turn.reply) + stop for turn in trajectory.turns]
        self.targets = [chat.encode(turn.target) + stop if turn.label is not None else None for turn in trajectory.turns]
        self.after = [chat.user_turn(turn.observation, reply, stopped=True) for turn, reply in zip(trajectory.turns, self.replies)]

    def context(self, start: int, end: int) -> list[int]:
        """Head plus turns start..end-1 as executed, ending at the generation prompt of turn `end`."""
        tokens = list(self.head)
        for i in range(start, end):
            tokens += self.replies[i] + self.after[i]
        return tokens


def token_rows(trajectories: Iterable[Trajectory], chat: Any, max_tokens: int = 2048, history: int = 2,
               learn_replies: bool = True) -> Iterator[TokenRow]:
    """Rows of every trajectory. `learn_replies`: learn the executed replies of unlabelled turns
    (expert and rewarded episodes); False learns labels only (a failed learner episode relabelled
    by the expert)."""
    for trajectory in trajectories:
        layout = _Layout(chat, trajectory)
        turns = trajectory.turns
        # In-sequence turns: the executed reply is the one to learn (or, for labelled turns, agrees with the label).
        in_sequence = [
            (turn.label is None and learn_replies) or (turn.label is not None and turn.label == turn.reply) for turn in turns
        ]
        row_start = 0
        tokens, mask = list(layout.head), [0] * len(layout.head)
        relabelled: set[tuple[int, ...]] = set()
        for i, turn in enumerate(turns):
            if turn.label is not None and turn.label != turn.reply:
                context = layout.context(max(0, i - history), i)
                target = layout.targets[i]
                assert target is not None
                row = tuple(context + target)
                if len(row) <= max_tokens and row not in relabelled:
                    relabelled.add(row)
                    yield TokenRow(list(row), [0] * len(context) + [1] * len(target), trajectory.item_id)
            piece = layout.replies[i] + (layout.after[i] if i + 1 < len(turns) else [])
            if len(tokens) + len(piece) > max_tokens and i > row_start:
                if any(mask):
                    yield TokenRow(tokens, mask, trajectory.item_id)
                row_start = i
                tokens = layout.context(max(0, i - history), i)
                mask = [0] * len(tokens)
            if len(tokens) + len(piece) > max_tokens:
                break  # one turn alone does not fit: the rest of the episode is dropped
            tokens += piece
            mask += [int(in_sequence[i])] * len(layout.replies[i]) + [0] * (len(piece) - len(layout.replies[i]))
        if any(mask):
            yield TokenRow(tokens, mask, trajectory.item_id)


def conversation_tokens(chat: Any, trajectory: Trajectory) -> tuple[list[int], list[int]]:
    """The whole episode as one sequence with its agent-token mask (no cut): what an evaluation
    of the same replies would have fed the model."""
    layout = _Layout(chat, trajectory)
    tokens, mask = list(layout.head), [0] * len(layout.head)
    for i in range(len(trajectory.turns)):
        tokens += layout.replies[i]
        mask += [1] * len(layout.replies[i])
        if i + 1 < len(trajectory.turns):
            tokens += layout.after[i]
            mask += [0] * len(layout.after[i])
    return tokens, mask
