"""The run configuration: what ``config.json`` holds and ``--resume`` compares.

Validates only; loading models or data happens in the runner.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testtime.search.base import SamplingConfig, SearchConfig
from testtime.types import PAPER_PATH_TOKENS

CONFIG_VERSION = 2
#: Fields that may change between a run and its resumption without changing any result.
RESUME_FREE_FIELDS = frozenset({"data_dir", "max_concurrent_problems", "progress", "compare"})


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "demo"
    """``demo``, ``demo-N``, ``math500``, ``aime24``, ``amc23`` or a path to a JSONL file."""
    data_dir: str | None = None
    """Directory with the benchmark JSONL files (else ``TESTTIME_DATA_DIR``, else the Hub)."""
    problem_field: str = "problem"
    """JSONL field holding the problem text."""
    answer_field: str = "answer"
    """JSONL field holding the reference answer."""
    limit: int | None = Field(default=None, ge=1)
    """Take only the first K problems (after ``ids``)."""
    ids: tuple[str, ...] | None = None
    """Take only these problem ids."""


class AdaptiveSettings(BaseModel):
    """How the adaptive solver (``--method adaptive``) spends its budget (see
    :mod:`testtime.analysis.adaptive`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: str
    """Path of the ``optimal_table.json`` written by ``testtime analyze``."""
    budget: int = Field(ge=1)
    """Target generations per problem (B)."""
    pilot: int = Field(default=4, ge=1)
    """Pilot samples per problem (counted in the budget)."""
    scheme: Literal["absolute", "quantile", "all"] = "absolute"
    """Binning of the table to use."""
    stop_agreement: float = Field(default=1.0, ge=0.0, le=1.0)
    """Pilot agreement at or above which (with ``stop_score``) the pilot answer is final."""
    stop_score: float = Field(default=0.5, ge=0.0, le=1.0)
    """Mean last-step score needed for an early stop."""
    margin: float = Field(default=0.1, ge=0.0)
    """Distance of the estimate to a bin boundary below which the pilot is uncertain."""
    disagreement: float = Field(default=0.4, ge=0.0)
    """|agreement - mean score| above which the pilot is uncertain."""
    escalation: int = Field(default=2, ge=1)
    """Budget multiplier for uncertain problems."""
    cap: bool = True
    """Escalations are paid for by earlier problems' savings, so the mean spend never passes
    ``budget`` (:mod:`testtime.analysis.budget`); off: ``budget`` is a target escalation can
    exceed."""
    compare: tuple[str, ...] = ()
    """Fixed-method run directories the summary compares with (on the same problems)."""

    @model_validator(mode="after")
    def _check(self) -> AdaptiveSettings:
        if self.pilot > self.budget:
            raise ValueError(f"adaptive.pilot ({self.pilot}) must not exceed adaptive.budget "
                             f"({self.budget})")
        return self


class RunConfig(BaseModel):
    """Everything that determines a run's results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = CONFIG_VERSION
    """Config schema version."""
    dataset: DatasetConfig = DatasetConfig()
    """Which problems."""
    policy: str = "default"
    """Policy spec, ``BACKEND:MODEL`` (``default`` = the embedded SmolLM2 on the CPU)."""
    policy_options: dict[str, Any] = Field(default_factory=dict)
    """Engine and placement settings of the policy backend (``device``, ``dtype``,
    ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``gpus``, ...:
    :mod:`testtime.engine_options`); a setting the backend lacks is refused."""
    prm: str = "self-certainty"
    """Step scorer spec (``self-certainty``, ``confidence``, ``FAMILY:PATH``, ...). Not given:
    self-certainty where the policy backend reports the full distribution, else confidence
    (:func:`testtime.scoring.registry.default_scorer`)."""
    prm_options: dict[str, Any] = Field(default_factory=dict)
    """Engine and placement settings of the scorer (``device``, ``dtype``, ``gpus``,
    ``device_map``, ``max_memory``, ``kv_cache_gb``, ...); a setting it lacks is refused."""
    prompt: str | None = None
    """Prompt template name; None picks it from the policy's model name."""
    search: SearchConfig = SearchConfig()
    """Method and budget."""
    sampling: SamplingConfig = SamplingConfig()
    """Temperature, top-p and seed."""
    max_concurrent_problems: int = Field(default=64, ge=1)
    """Problems searched at once (their requests are batched together)."""
    adaptive: AdaptiveSettings | None = None
    """Settings of the adaptive solver; set exactly when ``search.method`` is ``adaptive``."""

    @model_validator(mode="before")
    @classmethod
    def _recommended_sampling(cls, data: Any) -> Any:
        """Without explicit sampling settings, the policy family's (see :func:`recommended`)."""
        if isinstance(data, dict) and "sampling" not in data:
            data = {**data, "sampling": recommended(str(data.get("policy", "default")),
                                                    data.get("prompt"))[0]}
        if isinstance(data, dict) and "prm" not in data:
            from testtime.scoring.registry import default_scorer

            data = {**data, "prm": default_scorer(str(data.get("policy", "default")))}
        return data

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        from testtime.search import METHODS

        s = self.search
        if s.method not in METHODS:
            raise ValueError(f"search.method: unknown method {s.method!r}; known: "
                             f"{', '.join(sorted(METHODS))}")
        if s.method in ("beam_search", "dvts") and s.n % s.beam_width:
            raise ValueError(f"search.n={s.n} must be a multiple of "
                             f"search.beam_width={s.beam_width}")
        if (s.method == "adaptive") != (self.adaptive is not None):
            raise ValueError("adaptive settings (a table and a budget) go with method "
                             "'adaptive', and only with it")
        return self


#: Path limit of the embedded default (SmolLM2-135M answers in well under 200 tokens and
#: otherwise rambles); real models get the paper's 8192 (DeepSeek-R1-Distill: 32768).
EMBEDDED_PATH_TOKENS = 256


def is_embedded(policy: str) -> bool:
    """Whether a policy spec names the embedded SmolLM2 (``default`` or ``BACKEND:default``)."""
    return policy == "default" or policy.endswith(":default")


def recommended(policy: str, prompt: str | None = None) -> tuple[SamplingConfig, int]:
    """The paper's sampling settings and path limit for a policy, by model family.

    Liu et al. sample at temperature 0.7, top-p 1.0, CoT greedy, 8192 new tokens; for
    DeepSeek-R1-Distill its authors' settings: 0.6, 0.95, CoT sampled too, 32768 tokens
    (the prompt template's ``recommended_sampling``). No I/O: the family comes from the name.
    """
    from testtime.prompts import prompt_for_model

    try:
        rec = prompt_for_model(policy, prompt).recommended_sampling
    except ValueError:  # an unknown --prompt: named by the config check, not here
        rec = prompt_for_model(policy).recommended_sampling
    if rec is not None:
        return (SamplingConfig(temperature=rec.temperature, top_p=rec.top_p, greedy_cot=False),
                rec.max_tokens)
    return SamplingConfig(), EMBEDDED_PATH_TOKENS if is_embedded(policy) else PAPER_PATH_TOKENS


def config_diff(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of fields whose values differ (resume-free fields ignored)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUME_FREE_FIELDS:
            continue
        a, b = saved.get(key), current.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, name + ".")
        elif a != b:
            out.append(f"{name} (saved {a!r}, now {b!r})")
    return out
