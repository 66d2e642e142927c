"""testtime: compute-optimal test-time scaling of language models on math reasoning.

The public API, what a user imports (everything else is implementation and may move):

* Running: :func:`run` (async; one run directory from a :class:`RunConfig`),
  :func:`build_run` (the policy, scorer and search context of a config, as an async context
  manager), the configs :class:`RunConfig`, :class:`DatasetConfig`, :class:`SearchConfig`,
  :class:`SamplingConfig`.
* Protocols: :class:`Policy` (``async generate(requests) -> completions``) and
  :class:`StepScorer` (``async score(requests) -> ScoreResult``), with the value types they
  exchange (:class:`GenerationRequest`, :class:`SamplingParams`, :class:`Completion`,
  :class:`ScoreRequest`, :class:`Step`, :class:`ScoreResult`, :class:`Problem`).
* Registries (name -> factory, heavy imports on first use): :func:`build_policy`,
  :func:`build_scorer`, :data:`METHODS` / :func:`get_method`, :func:`load_problems`.
* Records: :class:`ProblemRecord`, :func:`read_records`.

Importing ``testtime`` loads none of torch, transformers, vLLM or Ray.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = _metadata.version("testtime")
except _metadata.PackageNotFoundError:  # a source tree without an install
    __version__ = "0+unknown"

#: Public name -> "module:attribute", imported on first access (PEP 562) so that
#: ``import testtime`` stays light.
_EXPORTS: dict[str, str] = {
    "run": "testtime.runner:run",
    "RunOutcome": "testtime.runner:RunOutcome",
    "build_run": "testtime.compose:build_run",
    "BuiltRun": "testtime.compose:BuiltRun",
    "RunConfig": "testtime.config:RunConfig",
    "DatasetConfig": "testtime.config:DatasetConfig",
    "AdaptiveSettings": "testtime.config:AdaptiveSettings",
    "SearchConfig": "testtime.search.base:SearchConfig",
    "SamplingConfig": "testtime.search.base:SamplingConfig",
    "SearchContext": "testtime.search.base:SearchContext",
    "SearchResult": "testtime.search.base:SearchResult",
    "Policy": "testtime.policy.base:Policy",
    "StepScorer": "testtime.scoring.base:StepScorer",
    "ScoreResult": "testtime.scoring.base:ScoreResult",
    "GenerationRequest": "testtime.types:GenerationRequest",
    "SamplingParams": "testtime.types:SamplingParams",
    "Completion": "testtime.types:Completion",
    "ScoreRequest": "testtime.types:ScoreRequest",
    "Step": "testtime.types:Step",
    "Problem": "testtime.types:Problem",
    "ChatMessage": "testtime.types:ChatMessage",
    "build_policy": "testtime.policy.registry:build_policy",
    "build_scorer": "testtime.scoring.registry:build_scorer",
    "METHODS": "testtime.search:METHODS",
    "get_method": "testtime.search:get_method",
    "load_problems": "testtime.datasets:load_problems",
    "DatasetSpec": "testtime.datasets:DatasetSpec",
    "ProblemRecord": "testtime.records:ProblemRecord",
    "read_records": "testtime.store:read_records",
    "UserError": "testtime.errors:UserError",
}

__all__ = [
    "METHODS",
    "AdaptiveSettings",
    "BuiltRun",
    "ChatMessage",
    "Completion",
    "DatasetConfig",
    "DatasetSpec",
    "GenerationRequest",
    "Policy",
    "Problem",
    "ProblemRecord",
    "RunConfig",
    "RunOutcome",
    "SamplingConfig",
    "SamplingParams",
    "ScoreRequest",
    "ScoreResult",
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "Step",
    "StepScorer",
    "UserError",
    "__version__",
    "build_policy",
    "build_run",
    "build_scorer",
    "get_method",
    "load_problems",
    "read_records",
    "run",
]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'testtime' has no attribute {name!r}")
    import importlib

    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from testtime.compose import BuiltRun, build_run
    from testtime.config import AdaptiveSettings, DatasetConfig, RunConfig
    from testtime.datasets import DatasetSpec, load_problems
    from testtime.errors import UserError
    from testtime.policy.base import Policy
    from testtime.policy.registry import build_policy
    from testtime.records import ProblemRecord
    from testtime.runner import RunOutcome, run
    from testtime.scoring.base import ScoreResult, StepScorer
    from testtime.scoring.registry import build_scorer
    from testtime.search import METHODS, get_method
    from testtime.search.base import SamplingConfig, SearchConfig, SearchContext, SearchResult
    from testtime.store import read_records
    from testtime.types import (
        ChatMessage,
        Completion,
        GenerationRequest,
        Problem,
        SamplingParams,
        ScoreRequest,
        Step,
    )
