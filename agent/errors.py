"""The agent's exception hierarchy: one base, a few kinds a caller acts on differently."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose; its message is one line for a person."""


class ConfigError(AgentError):
    """Bad configuration or command-line input (exit code 2)."""


class TargetError(AgentError):
    """A target could not be connected to or polled; ``kind`` is a poll-error label value."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PollAborted(AgentError):
    """A poll cut short because its target is being removed or the agent stops: not a fault
    of the target, so nothing is counted or published."""
