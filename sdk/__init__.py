"""gymwire SDK: the Environment base class, server runtime, client, conformance suite and CLI."""

from .environment import Environment, Image, Observation, StepOutcome, Task, TaskError

__all__ = ["Environment", "Image", "Observation", "StepOutcome", "Task", "TaskError"]
