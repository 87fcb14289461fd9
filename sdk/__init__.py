"""gymwire SDK: the Environment base class, server runtime, client, conformance suite and CLI."""

from .env_spec import EnvSpec
from .environment import Environment, Image, Observation, StepOutcome, Task, TaskError

__all__ = ["Environment", "EnvSpec", "Image", "Observation", "StepOutcome", "Task", "TaskError"]
