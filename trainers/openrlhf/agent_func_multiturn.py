"""The same environments through OpenRLHF's own multi-turn loop (`MultiTurnAgentExecutor`).

`--train.agent_func_path <path of this file>`; needs GYMWIRE_TOKENIZER besides the usual GYMWIRE_*
variables. The loop is OpenRLHF's: text-level feedback and no per-turn token cap. Prefer
agent_func.py (token-in/token-out, per-turn cap) unless comparing with OpenRLHF's stock loop.
"""

from openrlhf.utils.agent import MultiTurnAgentExecutor

from gymwire.trainers.openrlhf.agent import GymwireAgentInstance


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self) -> None:
        super().__init__(GymwireAgentInstance)
