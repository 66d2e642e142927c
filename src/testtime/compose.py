"""The composition root: every entry point (the runner, sweeps, the adaptive solver, Ray
actors) gets its policy, scorer and search context from :func:`build_run`.

``build_run`` checks every name in the config first (method, policy, scorer, prompt: see
:func:`check_config`), so a typo fails in a second with one line instead of after a model
has loaded; then it builds what was not injected, and closes what it built on exit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testtime.config import RunConfig
from testtime.flops import FlopCosts, costs_for_specs
from testtime.policy.base import Policy
from testtime.scoring.base import StepScorer
from testtime.search.base import SearchContext, SearchFn
from testtime.types import Problem

if TYPE_CHECKING:
    from testtime.grading import Grader


def check_config(config: RunConfig, *, policy: bool = True, scorer: bool = True) -> None:
    """Check the names a config holds without loading anything: the search method, the prompt
    and, unless told otherwise (engines injected by the caller), the policy and scorer specs
    (their local paths exist; Hub ids are cached when offline), their engine settings (each
    one the backend has: none is dropped silently) and that the policy can feed the scorer.
    Raises :class:`testtime.errors.UserError` naming the option."""
    from testtime.errors import UserError
    from testtime.policy.registry import check_policy_options, check_policy_spec
    from testtime.prompts import prompt_names
    from testtime.scoring.registry import (
        check_scorer_feeds,
        check_scorer_options,
        check_scorer_spec,
    )
    from testtime.search import METHODS

    if config.search.method not in METHODS:
        raise UserError(f"unknown method; known: {', '.join(sorted(METHODS))}", "--method",
                        config.search.method)
    if config.prompt is not None and \
            config.prompt.strip().lower().replace("-", "_") not in prompt_names():
        raise UserError(f"unknown prompt; known: {', '.join(prompt_names())}", "--prompt",
                        config.prompt)
    if policy:
        check_policy_spec(config.policy)
        check_policy_options(config.policy, config.policy_options)
    if scorer:
        check_scorer_spec(config.prm)
        check_scorer_options(config.prm, config.prm_options)
        if policy:
            check_scorer_feeds(config.prm, config.policy)


@dataclass
class BuiltRun:
    """A run's engines and what a search needs from them."""

    config: RunConfig
    policy: Policy
    scorer: StepScorer
    method: SearchFn
    ctx: SearchContext
    costs: FlopCosts
    """FLOPs per token of policy and scorer (from the loaded models, else from the specs)."""

    def for_config(self, config: RunConfig) -> BuiltRun:
        """The same engines for another config of the same policy and scorer (a sweep's next
        cell): its own method, search and sampling settings."""
        if (config.policy, config.prm) != (self.config.policy, self.config.prm):
            raise ValueError(f"built for {self.config.policy} + {self.config.prm}, not "
                             f"{config.policy} + {config.prm}")
        check_config(config, policy=False, scorer=False)  # the engines exist already
        return dataclasses.replace(
            self, config=config, method=_method(config),
            ctx=dataclasses.replace(self.ctx, prompt=_prompt(self.policy, config),
                                    search=config.search, sampling=config.sampling))


def _method(config: RunConfig) -> SearchFn:
    from testtime.search import method_for

    return method_for(config)


def _prompt(policy: Policy, config: RunConfig) -> object:
    from testtime.prompts import prompt_for_model

    # A served alias says nothing of the family: the files of the model the server loaded do.
    return prompt_for_model(policy.name, config.prompt,
                            model_files=getattr(policy, "model_files", None))


def flop_costs(config: RunConfig, policy: Policy, scorer: StepScorer) -> FlopCosts:
    """FLOPs per token of policy and scorer: from the loaded models, else from the specs."""
    costs = FlopCosts.of(policy, scorer)
    fallback = costs_for_specs(config.policy, config.prm)
    return FlopCosts(costs.policy_params or fallback.policy_params,
                     costs.prm_params or fallback.prm_params)


@asynccontextmanager
async def build_run(
    config: RunConfig,
    problems: Iterable[Problem] = (),
    *,
    policy: Policy | None = None,
    scorer: StepScorer | None = None,
    grader: Grader | None = None,
) -> AsyncIterator[BuiltRun]:
    """Build (or take) the policy and scorer of ``config`` and the search context; close on
    exit what was built here (injected engines belong to the caller).

    ``problems`` are the run's problems, for scorers that need them (the outcome oracle reads
    their references); ``grader`` gives methods that compare answers (the adaptive solver)
    answer equivalence.
    """
    check_config(config, policy=policy is None, scorer=scorer is None)
    problems = list(problems)
    async with AsyncExitStack() as stack:
        if policy is None:
            from testtime.policy.registry import build_policy

            policy = build_policy(config.policy, config.policy_options)
            stack.push_async_callback(policy.aclose)
        if scorer is None:
            from testtime.scoring.registry import build_scorer

            # The judge runs on the policy; the outcome oracle needs the references.
            scorer = build_scorer(config.prm, config.prm_options, policy=policy,
                                  problems=problems)
            stack.push_async_callback(scorer.aclose)
        else:
            register = getattr(scorer, "add_problems", None)
            if register is not None:  # an injected outcome oracle
                register(problems)
        ctx = SearchContext(policy=policy, scorer=scorer, prompt=_prompt(policy, config),  # type: ignore[arg-type]
                            search=config.search, sampling=config.sampling, grader=grader)
        yield BuiltRun(config, policy, scorer, _method(config), ctx,
                       flop_costs(config, policy, scorer))
