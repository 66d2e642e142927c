"""What a request may choose and what the service allows: the ``tts`` object, the model-name
shorthand, the service's defaults and limits, and the per-request ``RunConfig`` they make.

Contract: :func:`request_config` turns a validated request into the ``RunConfig`` that
``testtime run`` would use for the same settings (same policy, scorer, prompt, path limit,
sampling family defaults), so a request searches exactly as a run does. Every refusal is a
:class:`RequestError` naming the request field (``tts.n``, ``model``, ``max_tokens``, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from testtime.config import AdaptiveSettings, RunConfig
from testtime.selection import RULES, select

#: ``tts.method`` value that runs the adaptive solver on the service's table.
OPTIMAL = "optimal"
#: The adaptive solver's own pick (its strategy's rule), the default rule of ``optimal``.
ADAPTIVE_RULE = "adaptive"
#: Prefix of the model-name shorthand (``tts/beam_search/n8/m4/prm_min_max``).
SHORTHAND_PREFIX = "tts"
#: Problem ids of requests: this prefix and the first hex digits of the problem's SHA-256.
PROBLEM_ID_PREFIX = "req-"


class RequestError(ValueError):
    """A request the service refuses: HTTP ``status``, the field it names (``param``) and an
    OpenAI error ``type``/``code``."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.type = status, param, code, type_


class TTSOptions(BaseModel):
    """The ``tts`` object of a request body (``extra_body={"tts": {...}}``); unset fields take
    the service's defaults (``GET /v1/models`` shows them)."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = None
    """A method of ``testtime run`` (``cot``, ``best_of_n``, ``beam_search``, ``dvts``,
    ``particle_filtering``, ``adaptive_sc``) or ``optimal`` (the adaptive solver)."""
    n: int | None = None
    """Budget N of the search (generations); ``optimal``: use ``budget``."""
    beam_width: int | None = None
    """M of beam search and DVTS (``n`` a multiple of it)."""
    rule: str | None = None
    """Selection rule (``majority``, ``prm_{min,last,avg,prod}_{max,vote}``, DeepConf's)."""
    semantics: Literal["paper", "sal"] | None = None
    """Whose search decisions to reproduce."""
    seed: int | None = None
    """Base seed (else the body's ``seed``, else the service's)."""
    budget: int | None = None
    """``optimal``: target generations for this problem (the solver may escalate it)."""
    return_candidates: bool = False
    """Add every candidate path (text, answer, scores) to the ``tts`` extension."""
    return_tree: bool = False
    """Add the search tree (one node per step) to the ``tts`` extension."""


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of ``testtime serve tts`` (validated here; nothing is bound or loaded)."""

    host: str = "127.0.0.1"
    """Interface to bind; the loopback default keeps the service private to this machine."""
    port: int = 8000
    """TCP port; 0 picks a free one (the bound address is printed)."""
    api_key: str | None = None
    """When set, ``/v1/*`` need ``Authorization: Bearer <key>`` (compared in constant time)."""
    method: str = "best_of_n"
    """Default method."""
    n: int = 4
    """Default budget N."""
    beam_width: int = 4
    """Default M of beam search and DVTS."""
    rule: str = "majority"
    """Default selection rule (``optimal`` defaults to the solver's own pick)."""
    semantics: Literal["paper", "sal"] = "paper"
    """Default search semantics."""
    seed: int = 0
    """Default base seed."""
    budget: int = 4
    """Default budget of ``optimal``."""
    pilot: int = 4
    """Pilot samples of ``optimal`` (at most its budget)."""
    table: str | None = None
    """``optimal_table.json`` for ``method: optimal`` (None: ``optimal`` is refused)."""
    max_n: int = 64
    """Largest ``tts.n`` / ``tts.budget`` (and OpenAI ``n``, which cannot exceed the budget)."""
    max_path_tokens: int = 8192
    """Token limit of one path (the default and the largest ``max_tokens``)."""
    max_in_flight: int = 32
    """Searches running at once; more requests get 429 with ``Retry-After``."""
    request_timeout_s: float = 600.0
    """A search not done in this time is cancelled and answered 504."""
    max_request_bytes: int = 1 << 20
    """Larger bodies get 413 before they are parsed."""
    max_problem_chars: int = 20_000
    """Longest problem text (the last user message)."""
    progress_interval_s: float = 0.5
    """Seconds between progress chunks of a streamed request."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("n", "beam_width", "budget", "pilot", "max_n", "max_path_tokens",
                     "max_in_flight", "max_request_bytes", "max_problem_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "progress_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")
        if max(self.n, self.budget) > self.max_n:
            raise ValueError(f"default n/budget ({self.n}/{self.budget}) above max_n "
                             f"({self.max_n})")
        check_rule(self.rule, "rule")
        from testtime.search import METHODS

        if self.method != OPTIMAL and (self.method not in METHODS or self.method == "adaptive"):
            raise ValueError(f"unknown default method {self.method!r}")
        if self.method == OPTIMAL and self.table is None:
            raise ValueError("default method 'optimal' needs a table (--table)")
        if self.semantics not in ("paper", "sal"):
            raise ValueError(f"semantics must be paper or sal, got {self.semantics!r}")

    def defaults(self) -> dict[str, Any]:
        """The ``tts`` defaults and limits, as ``GET /v1/models`` shows them."""
        return {"method": self.method, "n": self.n, "beam_width": self.beam_width,
                "rule": self.rule, "semantics": self.semantics, "seed": self.seed,
                "budget": self.budget, "optimal": self.table is not None,
                "limits": {"max_n": self.max_n, "max_tokens": self.max_path_tokens,
                           "max_in_flight": self.max_in_flight,
                           "request_timeout_s": self.request_timeout_s,
                           "max_request_bytes": self.max_request_bytes}}


def check_rule(rule: str, param: str) -> None:
    """``rule`` is a selection rule the service applies (``oracle`` needs a reference)."""
    if rule == "oracle":
        raise RequestError(422, "rule 'oracle' needs the reference answer; a request has none",
                           param, "invalid_rule")
    if rule == ADAPTIVE_RULE:
        return
    try:
        select(rule, [])
    except ValueError:
        known = ", ".join(r for r in RULES if r != "oracle")
        raise RequestError(422, f"unknown selection rule {rule!r}; known: {known} (and "
                                f"deepconf_{{lowest,bottom10,tail,mean}}_{{ETA}}_{{vote,wvote}})",
                           param, "invalid_rule") from None


_SHORTHAND_PART = re.compile(r"^(?:(?P<key>n|m|seed|b)(?P<num>\d+))$")


def parse_shorthand(model: str) -> TTSOptions:
    """``tts/METHOD[/nN][/mM][/bB][/seedS][/RULE]`` -> the options it names (``tts`` alone: the
    defaults; any other model name: no options). ``b`` is the budget of ``optimal``."""
    parts = model.strip("/").split("/")
    if parts[0] != SHORTHAND_PREFIX:
        return TTSOptions()
    fields: dict[str, Any] = {}
    names = {"n": "n", "m": "beam_width", "b": "budget", "seed": "seed"}
    for i, part in enumerate(parts[1:]):
        m = _SHORTHAND_PART.match(part)
        if m is not None:
            fields[names[m["key"]]] = int(m["num"])
        elif i == 0:
            fields["method"] = part
        elif "rule" not in fields:
            fields["rule"] = part
        else:
            raise RequestError(422, f"model {model!r}: cannot read {part!r} (expected "
                                    f"tts/METHOD[/nN][/mM][/bB][/seedS][/RULE])", "model",
                               "invalid_model")
    return TTSOptions(**fields)


def problem_id(text: str) -> str:
    """The id a request's problem gets: it seeds the search as a dataset id does in a run, so
    the same problem text searches the same way whoever asks, and a JSONL line with this id
    and text reproduces it with ``testtime run``."""
    return PROBLEM_ID_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Resolved:
    """A request's search: its run config and the rule that picks its answer."""

    config: RunConfig
    rule: str
    method: str
    """As the client named it (``optimal`` for the adaptive solver)."""


def request_config(base: RunConfig, service: ServiceConfig, opts: TTSOptions, *,
                   seed: int | None, temperature: float | None, top_p: float | None,
                   max_tokens: int | None, choices: int) -> Resolved:
    """The per-request ``RunConfig`` (``base``: the service's, as ``testtime run`` builds it
    with the service's options). Raises :class:`RequestError` naming the offending field."""
    from testtime.search import METHODS

    method = opts.method or service.method
    if method != OPTIMAL and (method not in METHODS or method == "adaptive"):
        known = ", ".join(sorted([*(m for m in METHODS if m != "adaptive"), OPTIMAL]))
        raise RequestError(422, f"unknown method {method!r}; known: {known}", "tts.method",
                           "invalid_method")
    rule = opts.rule or (ADAPTIVE_RULE if method == OPTIMAL else service.rule)
    check_rule(rule, "tts.rule")
    if rule == ADAPTIVE_RULE and method != OPTIMAL:
        raise RequestError(422, "rule 'adaptive' is the pick of method 'optimal' only",
                           "tts.rule", "invalid_rule")
    n = _bounded(opts.n if opts.n is not None else service.n, "tts.n", service.max_n)
    budget = _bounded(opts.budget if opts.budget is not None else service.budget,
                      "tts.budget", service.max_n)
    beam_width = _bounded(opts.beam_width if opts.beam_width is not None
                          else min(service.beam_width, n), "tts.beam_width", service.max_n)
    if method in ("beam_search", "dvts") and n % beam_width:
        raise RequestError(422, f"tts.n={n} must be a multiple of tts.beam_width={beam_width}",
                           "tts.beam_width", "invalid_value")
    path = base.search.max_path_tokens
    if max_tokens is not None:
        path = _bounded(max_tokens, "max_tokens", service.max_path_tokens)
    if method == OPTIMAL and service.table is None:
        raise RequestError(422, "method 'optimal' needs the service started with --table",
                           "tts.method", "optimal_unavailable")
    adaptive = None if method != OPTIMAL else AdaptiveSettings(
        table=service.table or "", budget=budget, pilot=min(service.pilot, budget),
        cap=False)  # no request's spend may depend on another's
    search = dataclasses.replace(
        base.search, method="adaptive" if method == OPTIMAL else method,
        n=budget if method == OPTIMAL else n, beam_width=beam_width, max_path_tokens=path,
        semantics=opts.semantics or service.semantics)
    sampling = base.sampling
    try:
        sampling = dataclasses.replace(
            sampling, seed=_seed(opts.seed, seed, service.seed),
            temperature=sampling.temperature if temperature is None else temperature,
            top_p=sampling.top_p if top_p is None else top_p)
    except ValueError as exc:
        field = "temperature" if "temperature" in str(exc) else "top_p"
        raise RequestError(422, str(exc), field, "invalid_value") from None
    most = budget if method == OPTIMAL else n
    if not 1 <= choices <= most:
        raise RequestError(422, f"n={choices} choices: must be in 1..{most} (the search's "
                                f"budget)", "n", "invalid_value")
    config = base.model_copy(update={"search": search, "sampling": sampling,
                                     "adaptive": adaptive})
    return Resolved(config, rule, method)


def _seed(*candidates: int | None) -> int:
    return next(s for s in candidates if s is not None)


def _bounded(value: int, param: str, most: int) -> int:
    if not 1 <= value <= most:
        raise RequestError(422, f"{param}={value}: must be in 1..{most}", param,
                           "invalid_value")
    return value


def tts_field(model: str, body_tts: dict[str, Any] | None) -> TTSOptions:
    """The request's options: the model-name shorthand, overridden field by field by the
    body's ``tts`` object."""
    from pydantic import ValidationError

    short = parse_shorthand(model)
    if body_tts is None:
        return short
    try:
        own = TTSOptions.model_validate(body_tts)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise RequestError(422, f"tts.{loc}: {err['msg']}", f"tts.{loc}",
                           "invalid_value") from None
    return short.model_copy(update=own.model_dump(exclude_unset=True))


__all__ = ["OPTIMAL", "RequestError", "Resolved", "ServiceConfig", "TTSOptions",
           "parse_shorthand", "problem_id", "request_config", "tts_field"]
