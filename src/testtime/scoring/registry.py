"""Build a step scorer from its spec string (``--prm``), importing heavy parts lazily.

Specs:

* ``self-certainty``, ``confidence``: model-free, from the policy's own token statistics.
* ``FAMILY:PATH_OR_HUB_ID``: an in-process PRM (``math_shepherd``, ``rlhflow``, ``skywork``,
  ``qwen_prm``; see ``testtime.scoring.prm``).
* ``http://HOST:PORT`` / ``https://...``: a ``testtime serve prm`` service
  (``testtime.scoring.service.client``); API key from the URL or ``$TESTTIME_PRM_API_KEY``.
* ``vllm-pooling:[FAMILY:]MODEL@http://HOST:PORT``: a PRM served by vLLM's pooling API
  (``testtime.scoring.service.vllm_pooling``).
* ``judge``: LLM-as-judge on the run's own policy (``policy=`` is required);
  ``judge:hf:PATH``: LLM-as-judge on its own HF model (``testtime.scoring.judge``).
* ``oracle``: the outcome oracle, for analysis only; it needs the run's problems
  (``problems=``) for their reference answers (``testtime.scoring.oracle``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from testtime.policy.base import Policy
from testtime.scoring.base import StepScorer
from testtime.types import Problem

MODEL_FREE = ("self-certainty", "confidence")
#: The default ``--prm`` where the policy backend reports the full next-token distribution.
DEFAULT_SCORER = "self-certainty"
#: The default elsewhere (vllm, openai): DeepConf's top-20 confidence, which every backend
#: reports.
PORTABLE_SCORER = "confidence"
ORACLE = "oracle"
JUDGE = "judge"
#: Options a PRM factory takes; other scorers take the subset that applies to them.
_PRM_OPTIONS = ("device", "dtype", "max_batch_tokens", "trust_remote_code", "kv_cache_gb",
                "gpus", "device_map", "max_memory")
_JUDGE_OPTIONS = ("device", "dtype", "trust_remote_code")
_HTTP_OPTIONS = ("api_key",)
_POOLING_OPTIONS = ("tokenizer", "api_key", "task", "trust_remote_code")
_UNKNOWN = (f"use one of {', '.join(MODEL_FREE)}, FAMILY:PATH with FAMILY in math_shepherd, "
            f"rlhflow, skywork, qwen_prm, http://HOST:PORT, vllm-pooling:MODEL@http://HOST:PORT, "
            f"judge, judge:hf:PATH, or oracle")


def _pick(options: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: options[k] for k in keys if options.get(k) is not None}


def parse_judge_spec(spec: str) -> str:
    """``judge:hf:PATH_OR_HUB_ID`` -> the judge model; ``ValueError`` for any other form."""
    backend, _, path = spec[len(JUDGE) + 1:].partition(":")
    if not spec.startswith(f"{JUDGE}:") or backend != "hf" or not path:
        raise ValueError(f"judge spec {spec!r} must be 'judge' or 'judge:hf:PATH_OR_HUB_ID'")
    return path


def scorer_settings(spec: str) -> tuple[str, ...]:
    """The engine settings (``RunConfig.prm_options`` keys) the scorer of ``spec`` takes."""
    if spec in (*MODEL_FREE, ORACLE, JUDGE):
        return ()  # nothing to place: they read the policy's statistics or the references
    if spec.startswith(f"{JUDGE}:"):
        return _JUDGE_OPTIONS
    if spec.startswith(("http://", "https://")):
        return _HTTP_OPTIONS
    if spec.startswith("vllm-pooling:"):
        return _POOLING_OPTIONS
    return _PRM_OPTIONS


def check_scorer_options(spec: str, options: dict[str, Any] | None) -> None:
    """Refuse settings the scorer of ``spec`` does not take (no option dropped silently),
    naming the option that set it. Raises :class:`UserError`."""
    from testtime.engine_options import PRM_SETTINGS
    from testtime.errors import UserError

    takes = scorer_settings(spec)
    for key, value in (options or {}).items():
        if key not in takes:
            option = PRM_SETTINGS.get(key, "--prm-arg")
            shown = f"{key}={value}" if option == "--prm-arg" else str(value)
            valid = f"; it takes: {', '.join(takes)}" if takes else " (it loads no model)"
            raise UserError(f"the scorer {spec} has no such setting{valid}", option, shown)


def check_scorer_feeds(spec: str, policy: str) -> None:
    """Refuse, before anything loads, a model-free scorer the policy backend cannot feed:
    self-certainty needs the full next-token distribution, which ``vllm`` and ``openai``
    do not report. Raises :class:`UserError`."""
    from testtime.errors import UserError
    from testtime.policy.registry import backend_has_certainty

    if spec == "self-certainty" and not backend_has_certainty(policy):
        raise UserError(f"self-certainty needs the policy's full next-token distribution, "
                        f"which {policy.partition(':')[0]} does not report; use --prm "
                        f"{PORTABLE_SCORER} (DeepConf's top-20 confidence) or a PRM",
                        "--prm", spec)


def default_scorer(policy: str) -> str:
    """The ``--prm`` of a run that names none: self-certainty where the policy backend feeds
    it (hf, llamacpp), else confidence (vllm, openai), so every policy runs as it stands.
    An invalid policy spec gets self-certainty: the config check names the spec itself."""
    from testtime.policy.registry import POLICY_BACKENDS

    backend = "default" if policy == "default" else policy.partition(":")[0]
    known = POLICY_BACKENDS.get(backend)
    return PORTABLE_SCORER if known is not None and not known.certainty else DEFAULT_SCORER


def build_scorer(
    spec: str,
    options: dict[str, Any] | None = None,
    *,
    policy: Policy | None = None,
    problems: Iterable[Problem] | None = None,
) -> StepScorer:
    """The scorer named by ``spec``.

    ``options`` are engine settings (``device``, ``dtype``, ``max_batch_tokens``,
    ``trust_remote_code``, ``kv_cache_gb``, ``gpus``, ``device_map``, ``max_memory``;
    ``api_key`` for HTTP scorers; ``tokenizer``/``task`` for ``vllm-pooling``): each scorer
    takes those of :func:`scorer_settings` and refuses the others. ``policy`` is the run's
    policy (for ``judge``); ``problems`` are the run's problems (for ``oracle``).
    """
    opts = dict(options or {})
    check_scorer_options(spec, opts)
    if spec in MODEL_FREE:
        from testtime.scoring.self_certainty import SelfCertaintyScorer

        return SelfCertaintyScorer(spec)  # type: ignore[arg-type,return-value]
    if spec == ORACLE:
        from testtime.scoring.oracle import OracleScorer

        oracle = OracleScorer()
        oracle.add_problems(problems or ())
        return oracle
    if spec == JUDGE:
        from testtime.scoring.judge import JudgeScorer

        if policy is None:
            raise ValueError("--prm judge scores with the run's policy, and none was given; "
                             "use judge:hf:PATH for a judge model of its own")
        return JudgeScorer(policy)
    if spec.startswith(f"{JUDGE}:"):
        from testtime.scoring.judge import load_judge

        return load_judge(parse_judge_spec(spec), **_pick(opts, _JUDGE_OPTIONS))
    if spec.startswith(("http://", "https://")):
        from testtime.scoring.service.client import RemoteScorer

        return RemoteScorer.connect(spec, **_pick(opts, _HTTP_OPTIONS))
    if spec.startswith("vllm-pooling:"):
        from testtime.scoring.service.vllm_pooling import VLLMPoolingScorer

        return VLLMPoolingScorer.from_spec(spec, **_pick(opts, _POOLING_OPTIONS))
    if ":" in spec:
        from testtime.scoring.prm import PRM_FAMILIES, load_prm

        family = spec.partition(":")[0]
        if family in PRM_FAMILIES:
            return load_prm(spec, **_pick(opts, _PRM_OPTIONS))
    raise ValueError(f"unknown scorer {spec!r}: {_UNKNOWN}")


def check_scorer_spec(spec: str) -> None:
    """Check ``--prm`` before anything loads: a known scorer kind, a well-formed URL, a PRM
    family and a model that exists (local path) or can be fetched (Hub id; in the cache when
    offline). Raises ``UserError`` naming ``--prm``."""
    from testtime.errors import UserError, check_model_source

    if spec in (*MODEL_FREE, ORACLE, JUDGE):
        return
    try:
        if spec.startswith(f"{JUDGE}:"):
            check_model_source(parse_judge_spec(spec), "--prm", spec)
        elif spec.startswith(("http://", "https://")):
            from testtime.scoring.service.http import split_url

            split_url(spec)
        elif spec.startswith("vllm-pooling:"):
            from testtime.scoring.service.vllm_pooling import parse_spec

            parse_spec(spec)
        elif ":" in spec and spec.partition(":")[0] in _prm_families():
            check_model_source(spec.partition(":")[2], "--prm", spec)
        else:
            raise ValueError(f"unknown scorer; {_UNKNOWN}")
    except UserError:
        raise
    except ValueError as exc:
        raise UserError(str(exc), "--prm", spec) from None


def _prm_families() -> tuple[str, ...]:
    from testtime.scoring.prm import PRM_FAMILIES

    return tuple(PRM_FAMILIES)
