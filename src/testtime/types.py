"""Core value types shared by every layer: problems, requests, completions and steps.

These are plain frozen dataclasses with no behaviour beyond validation, so that backends,
scorers, search methods and the runner can exchange them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: A step of a solution ends at (and includes) a blank line.
STEP_DELIMITER = "\n\n"
#: A solution's final answer is written in ``\boxed{...}``: a step holding it ends the path.
BOXED = "\\boxed"
#: Token limit of a whole path in the paper's code (``max_new_tokens`` 8192; its
#: DeepSeek-R1-Distill runs use the family's 32768, see ``prompts/deepseek_r1.py``).
PAPER_PATH_TOKENS = 8192

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "eos", "confidence"]
"""Why a completion ended: a stop string was produced, the token limit was hit, the model
emitted its end-of-sequence / end-of-turn token, or (online DeepConf) the backend stopped the
row because its sliding-window group confidence fell below the request's threshold
(:class:`ConfidenceStop`)."""


@dataclass(frozen=True)
class Problem:
    """One benchmark problem with its reference answer."""

    id: str
    """Stable identifier, unique within a dataset (used for resuming and ``--ids``)."""
    problem: str
    """The problem statement as shown to the policy."""
    answer: str
    """The reference final answer (LaTeX or plain text)."""
    level: int | None = None
    """Difficulty level 1-5 when the dataset provides one (MATH, demo)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Any other dataset fields (subject, source, ...), stored in records as-is."""


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn."""

    role: Role
    content: str


@dataclass(frozen=True)
class ConfidenceStop:
    """Stop a row while it is generated once its group confidence is too low (online DeepConf,
    Fu et al. 2025).

    A row's group confidence after token ``t`` is the mean of the DeepConf token confidences
    (:func:`testtime.confidence.token_confidence`) of its last ``window`` generated tokens
    (fewer while ``t < window``: the backend checks only once ``window`` tokens exist, as the
    paper does). The backend ends the row right after the first token whose group confidence
    is strictly below ``threshold``, with ``finish_reason="confidence"``; the completion keeps
    the text, tokens and per-token statistics generated so far and nothing more.
    """

    threshold: float
    """Group-confidence threshold s (from the warm-up traces)."""
    window: int = 2048
    """Sliding-window size in tokens (the paper's 2048)."""

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"ConfidenceStop.window must be >= 1, got {self.window}")


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling settings (vLLM's ``SamplingParams``, reduced to what search needs)."""

    n: int = 1
    """Number of independent continuations to sample for this request."""
    temperature: float = 0.8
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]."""
    max_tokens: int = 2048
    """Upper bound on new tokens per continuation."""
    stop: tuple[str, ...] = ()
    """Generation stops right after any of these strings; the string is kept in the text."""
    seed: int | None = None
    """Seed for this request's sampling, for reproducible runs."""
    confidence_stop: ConfidenceStop | None = None
    """Stop rows early on low confidence (online DeepConf); None: never."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be >= 1, got {self.max_tokens}")


PrefixRendering = Literal["generation_prompt", "assistant_message"]
"""How a partial answer joins the chat: after the template's generation prompt
(``add_generation_prompt=True``, then the prefix verbatim), or as the content of a final
assistant message rendered by the template with its end-of-turn token removed (what the
paper's code does; it differs for templates that transform assistant messages, e.g.
DeepSeek-R1-Distill's, which opens no ``<think>`` there and keeps only what follows a
``</think>``)."""


@dataclass(frozen=True)
class GenerationRequest:
    """Continue a (possibly empty) partial assistant answer to a chat.

    The backend renders ``messages`` with the model's chat template and the partial answer
    ``prefix`` as ``rendering`` says (no end-of-turn token after it), and samples
    ``params.n`` continuations.
    """

    messages: tuple[ChatMessage, ...]
    prefix: str = ""
    params: SamplingParams = field(default_factory=SamplingParams)
    rendering: PrefixRendering = "generation_prompt"


@dataclass(frozen=True)
class Completion:
    """One sampled continuation and its cost.

    ``token_texts``, ``token_logprobs`` and ``token_certainties`` are parallel per-token lists
    (all empty when the backend cannot provide them). ``token_texts`` concatenate to the text
    the tokens produced, which may run past ``text`` when it was cut right after a stop string.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    token_texts: tuple[str, ...] = ()
    token_logprobs: tuple[float, ...] = ()
    """Log-probability of each sampled token under the model's unwarped (T=1) distribution."""
    token_certainties: tuple[float, ...] = ()
    """Per-token self-certainty KL(U || p) / log|V| in [0, 1] (Kang et al. 2025)."""
    token_confidences: tuple[float, ...] = ()
    """Per-token DeepConf confidence, minus the mean top-20 log-probability
    (:mod:`testtime.confidence`); empty when the backend cannot see the top tokens."""


@dataclass(frozen=True)
class Step:
    """One reasoning step (text up to and including a blank line) with its token statistics."""

    text: str
    num_tokens: int = 0
    logprob_sum: float | None = None
    """Sum of token log-probabilities over the step, when the backend reported them."""
    certainty_sum: float | None = None
    """Sum of per-token self-certainty over the step, when the backend reported it."""
    truncated: bool = False
    """The step was cut off by a token limit rather than ending naturally."""
    token_confidences: tuple[float, ...] = field(default=(), compare=False, repr=False)
    """The step's per-token DeepConf confidences (in memory only; records keep the path's
    trace metrics, ``CandidateRecord.confidence``)."""


@dataclass(frozen=True)
class ScoreRequest:
    """Ask a step scorer for one score per step of one (partial) solution."""

    question: str
    steps: tuple[Step, ...]
