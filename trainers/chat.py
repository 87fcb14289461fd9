"""Environment text -> prompt tokens, with the model's own chat template, for any template.

The policy's tokens are never re-tokenized. Only what the environment says is rendered, and it is
rendered as the *delta* the template adds for a new user turn: render a probe conversation ending
with an assistant turn, render it again with one more user turn and the generation prompt, and
keep the difference. What the template writes after an assistant message's content (its end of
turn, e.g. ChatML's "<|im_end|>\\n") is split off the same way: the model produced the first token
of it when it stopped, the rest is appended before the next user turn.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["ChatFormat", "ChatTemplateError"]

# Probe texts: plain words that survive any template unchanged and cannot be mistaken for markup.
_PROBE_USER = "gymwire probe question"
_PROBE_ASSISTANT = "gymwire probe answer"


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be extended turn by turn."""


class ChatFormat:
    """Renders environment turns for one tokenizer. `system` goes in a system message when set."""

    def __init__(self, tokenizer: Any, system: str | None = None):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                "the tokenizer has no chat_template; use an instruct/chat checkpoint or set tokenizer.chat_template"
            )
        self.tokenizer = tokenizer
        self.system = system
        probe = self._head([{"role": "user", "content": _PROBE_USER}, {"role": "assistant", "content": _PROBE_ASSISTANT}])
        after_answer = probe.rfind(_PROBE_ASSISTANT)
        if after_answer < 0:
            raise ChatTemplateError("the chat template drops the assistant's content; it cannot be used for rollouts")
        self._turn_close = probe[after_answer + len(_PROBE_ASSISTANT):]
        self._probe = probe
        self.turn_close_ids = self.encode(self._turn_close)
        self.stop_ids = _stop_ids(tokenizer, self.turn_close_ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + messages

    def _head(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            self._messages(messages), tokenize=False, add_generation_prompt=generation_prompt
        )

    def prompt(self, user_text: str, examples: Sequence[dict[str, str]] = ()) -> list[int]:
        """Tokens of the conversation's start: the few-shot `examples` (role/content messages), if
        any, the first user turn and the generation prompt."""
        messages = [*examples, {"role": "user", "content": user_text}]
        return self.encode(self._head(messages, generation_prompt=True))

    def user_turn(self, user_text: str, generated: Sequence[int], stopped: bool) -> list[int]:
        """Tokens to append after the policy's `generated` tokens: the rest of the assistant's turn
        close, the user turn and the next generation prompt. `stopped`: generation ended on a stop
        token (else a budget cut it, and the whole turn close is appended)."""
        full = self._head(
            [
                {"role": "user", "content": _PROBE_USER},
                {"role": "assistant", "content": _PROBE_ASSISTANT},
                {"role": "user", "content": user_text},
            ],
            generation_prompt=True,
        )
        if not full.startswith(self._probe):
            raise ChatTemplateError(
                "the chat template re-renders earlier turns when a turn is added (e.g. it strips past "
                "reasoning); multi-turn token-in/token-out needs a template whose renders extend each other"
            )
        close = self.turn_close_ids
        if stopped and generated and generated[-1] in close:
            # The model wrote the close up to its stop token; append only what the template adds after it.
            close = close[close.index(generated[-1]) + 1:]
        return close + self.encode(full[len(self._probe):])

    def render(self, conversation: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
        """(token ids, loss mask) of a recorded conversation (Episode.conversation(): messages with
        "loss"), laid out as a rollout lays it out: the messages before the first trained reply
        rendered by the template as the prompt (its own system message, if any, included), then
        per trained reply its tokens and the stop token (mask 1), and the environment's next turn as
        the template's delta (mask 0). What behaviour cloning trains on is then what the policy
        generates when it plays."""
        first = next((at for at, m in enumerate(conversation) if m.get("loss")), len(conversation))
        head = [{"role": m["role"], "content": m["content"]} for m in conversation[:first]]
        ids = self.encode(self.tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True)) if head else []
        mask = [0] * len(ids)
        stop = self.turn_close_ids[0] if self.turn_close_ids and self.turn_close_ids[0] in self.stop_ids else self.stop_ids[0]
        reply: list[int] = []
        for message in conversation[first:]:
            if message["role"] == "assistant":
                reply = self.encode(message["content"]) + [stop]
                ids += reply
                mask += [1 if message.get("loss") else 0] * len(reply)
            else:
                turn = self.user_turn(message["content"], reply, stopped=True)
                ids += turn
                mask += [0] * len(turn)
        return ids, mask


def _stop_ids(tokenizer: Any, turn_close_ids: list[int]) -> list[int]:
    """The eos token, and the special token that opens the template's turn close (ChatML's
    "<|im_end|>", Llama 3's "<|eot_id|>"), which is where an assistant turn ends."""
    stops: list[int] = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        stops.append(tokenizer.eos_token_id)
    if turn_close_ids and turn_close_ids[0] in set(getattr(tokenizer, "all_special_ids", ())):
        stops.append(turn_close_ids[0])
    if not stops:
        raise ChatTemplateError("the tokenizer has no eos_token and its turns end in no special token; generation would never stop")
    return sorted(set(stops))
