"""Give this file to OpenRLHF: `--train.agent_func_path <path of this file>`.

OpenRLHF execs it in every vLLM Ray actor and builds `AgentExecutor()`; everything else lives in
gymwire.trainers.openrlhf.agent (settings: the GYMWIRE_* environment variables listed there).
`gymwire openrlhf launch` passes this path for you.
"""

from gymwire.trainers.openrlhf.agent import GymwireAgentExecutor as AgentExecutor

__all__ = ["AgentExecutor"]
