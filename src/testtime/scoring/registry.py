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
ORACLE = "oracle"
JUDGE = "judge"
#: Options a PRM factory takes; other scorers take the subset that applies to them.
_PRM_OPTIONS = ("device", "dtype", "max_batch_tokens", "trust_remote_code", "kv_cache_gb")
_KNOWN_OPTIONS = (*_PRM_OPTIONS, "api_key", "tokenizer", "task")
_UNKNOWN = (f"use one of {', '.join(MODEL_FREE)}, FAMILY:PATH with FAMILY in math_shepherd, "
            f"rlhflow, skywork, qwen_prm, http://HOST:PORT, vllm-pooling:MODEL@http://HOST:PORT, "
            f"judge, judge:hf:PATH, or oracle")


def _pick(options: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: options[k] for k in keys if options.get(k) is not None}


def build_scorer(
    spec: str,
    options: dict[str, Any] | None = None,
    *,
    policy: Policy | None = None,
    problems: Iterable[Problem] | None = None,
) -> StepScorer:
    """The scorer named by ``spec``.

    ``options`` are engine settings (``device``, ``dtype``, ``max_batch_tokens``,
    ``trust_remote_code``, ``kv_cache_gb``; ``api_key`` for HTTP scorers; ``tokenizer``/``task`` for
    ``vllm-pooling``); each scorer takes the ones that apply to it. ``policy`` is the run's
    policy (for ``judge``); ``problems`` are the run's problems (for ``oracle``).
    """
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(_KNOWN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown scorer options {unknown}; known: {list(_KNOWN_OPTIONS)}")
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
        backend, _, path = spec[len(JUDGE) + 1:].partition(":")
        if backend != "hf" or not path:
            raise ValueError(f"judge spec {spec!r} must be 'judge' or 'judge:hf:PATH_OR_HUB_ID'")
        from testtime.scoring.judge import load_judge

        return load_judge(path, **_pick(opts, ("device", "dtype", "trust_remote_code")))
    if spec.startswith(("http://", "https://")):
        from testtime.scoring.service.client import RemoteScorer

        return RemoteScorer.connect(spec, **_pick(opts, ("api_key",)))
    if spec.startswith("vllm-pooling:"):
        from testtime.scoring.service.vllm_pooling import VLLMPoolingScorer

        return VLLMPoolingScorer.from_spec(
            spec, **_pick(opts, ("tokenizer", "api_key", "task", "trust_remote_code")))
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
            backend, _, path = spec[len(JUDGE) + 1:].partition(":")
            if backend != "hf" or not path:
                raise ValueError("expected 'judge' or 'judge:hf:PATH_OR_HUB_ID'")
            check_model_source(path, "--prm", spec)
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
