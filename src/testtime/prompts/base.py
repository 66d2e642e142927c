"""Prompt templates: how a problem becomes chat messages for a given model family.

A template only builds messages; the backend applies the model's own chat template and opens
the assistant turn, so partial solutions are continued identically on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testtime.types import ChatMessage


@dataclass(frozen=True)
class WorkedExample:
    """A solved problem shown before the real one (as a user/assistant exchange)."""

    problem: str
    solution: str
    """Steps separated by blank lines, ending in ``\\boxed{answer}``."""


@dataclass(frozen=True)
class RecommendedSampling:
    """Sampling settings a model family's authors recommend (data only; the user decides)."""

    temperature: float
    """Softmax temperature."""
    top_p: float
    """Nucleus sampling mass."""
    max_tokens: int
    """Token budget of one full solution."""


@dataclass(frozen=True)
class PromptTemplate:
    """Turns a problem statement into chat messages."""

    name: str
    """Identifier stored in records."""
    system: str | None = None
    """System message, or None for models trained without one (DeepSeek-R1-Distill)."""
    user_format: str = "{problem}"
    """Format of the user turn; ``{problem}`` is replaced by the problem text."""
    examples: tuple[WorkedExample, ...] = field(default_factory=tuple)
    """Worked examples shown first; small models need one to write ``\\boxed{}`` and steps."""
    recommended_sampling: RecommendedSampling | None = None
    """The model authors' recommended sampling for this family, or None when they give none."""

    def __post_init__(self) -> None:
        if "{problem}" not in self.user_format:
            raise ValueError(f"prompt {self.name!r}: user_format must contain '{{problem}}'")

    def messages(self, problem: str) -> tuple[ChatMessage, ...]:
        out: list[ChatMessage] = []
        if self.system is not None:
            out.append(ChatMessage("system", self.system))
        for ex in self.examples:
            out.append(ChatMessage("user", self.user_format.replace("{problem}", ex.problem)))
            out.append(ChatMessage("assistant", ex.solution))
        out.append(ChatMessage("user", self.user_format.replace("{problem}", problem)))
        return tuple(out)

    def problem_of(self, messages: tuple[ChatMessage, ...]) -> str | None:
        """The problem text that :meth:`messages` put in the last user turn, or None when
        that turn was not made by this template (the inverse, used by scripted policies)."""
        if not messages:
            return None
        head, _, tail = self.user_format.partition("{problem}")
        text = messages[-1].content
        if len(text) < len(head) + len(tail) or not (
            text.startswith(head) and text.endswith(tail)
        ):
            return None
        return text[len(head) : len(text) - len(tail)]
