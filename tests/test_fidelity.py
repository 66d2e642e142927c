"""testtime's search makes the reference implementations' decisions: a property test over
random scripted trees against ports of their loops (``search_ports.py``), for both
semantics, and hand-worked examples of every difference from the earlier testtime variant.

A tree is scripted by a seeded table: each sample after a prefix is a short step (from a small
vocabulary, so siblings repeat), sometimes with ``\\boxed``, sometimes ending at EOS (no blank
line), sometimes too long for the step limit (cut: ``length``), sometimes with leading
whitespace (the paper's code strips it). The PRM score of a path is a hash of its text, so no
two paths tie. testtime runs the scripted policy and scorer through the real search; the port
runs on its own copy of the same script; both must request the same samples, keep and end the
same paths and return the same final paths with the same scores.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_ports import sal_beam_search, sal_dvts, seed_beam_search

from testtime.prompts import prompt_for_model
from testtime.search import get_method
from testtime.search.base import SamplingConfig, SearchConfig, SearchContext
from testtime.testing import RuleScorer, ScriptedPolicy
from testtime.types import GenerationRequest, Problem, SamplingParams, Step

PROBLEM = Problem("p1", "What is 6 times 7?", "42")
PROMPT = prompt_for_model("scripted")
STEP_TOKENS = 6  # "w w w w w w w w" (8 tokens) is cut at 6: finish "length"


def make_script(salt: int, p_box: float, p_eos: float, p_long: float, unique_root: bool):
    """``script(problem, prefix, i, params)``: one step per sample, from a seeded table."""

    def script(problem: str, prefix: str, i: int, params: SamplingParams) -> str:
        h = int.from_bytes(hashlib.sha256(f"{salt}|{prefix}|{i}".encode()).digest()[:8], "big")
        rng = random.Random(h)
        root = unique_root and not prefix
        word = f"r{i}" if root else f"s{rng.randrange(4)}"
        # Unique, never-cut first steps keep DVTS subtrees apart: they share only the empty
        # prefix, whose samples are then handed out in the same order to both.
        roll = 1.0 if root else rng.random()
        if roll < p_long:
            return "w " * 8 + "tail.\n\n"
        body = f"{' ' if rng.random() < 0.2 else ''}{word} step"
        if rng.random() < p_box:
            body += f" \\boxed{{{rng.randrange(3)}}}"
        return body if roll < p_long + p_eos else body + ".\n\n"

    return script


def make_rule(salt: int):
    def rule(question: str, before: Sequence[Step], step: Step) -> float:
        text = "".join(s.text for s in before) + step.text
        h = hashlib.sha256(f"{salt}#{text}".encode()).digest()
        return int.from_bytes(h[:6], "big") / 2**48

    return rule


def run_testtime(script: Any, rule: Any, method: str, semantics: str, n: int, m: int,
                 depth: int, **search: Any) -> tuple[Any, ScriptedPolicy]:
    policy = ScriptedPolicy(script)
    ctx = SearchContext(policy, RuleScorer(rule), PROMPT,
                        SearchConfig(method=method, n=n, beam_width=m, max_depth=depth,
                                     max_step_tokens=STEP_TOKENS, max_path_tokens=10_000,
                                     semantics=semantics, **search),
                        SamplingConfig(temperature=0.7))
    return asyncio.run(get_method(method)(PROBLEM, ctx)), policy


class PortBackend:
    """``gen`` and ``score`` for the ports, over their own scripted policy, recording what
    they ask for (prefix, n) as testtime's requests are recorded."""

    def __init__(self, script: Any, rule: Any) -> None:
        self.policy = ScriptedPolicy(script)
        self.rule = rule
        self.asked: list[tuple[str, int]] = []

    def gen(self, prefix: str, n: int, last: bool = False) -> list[tuple[str, str]]:
        self.asked.append((prefix, n))
        params = SamplingParams(n=n, temperature=0.7, max_tokens=STEP_TOKENS,
                                stop=() if last else ("\n\n",))
        [group] = asyncio.run(self.policy.generate(
            [GenerationRequest(PROMPT.messages(PROBLEM.problem), prefix, params)]))
        return [(c.text, c.finish_reason) for c in group]

    def score(self, steps: list[str]) -> list[float]:
        objs = [Step(s) for s in steps]
        return [self.rule(PROBLEM.problem, objs[:i], s) for i, s in enumerate(objs)]


def asked(policy: ScriptedPolicy) -> Counter[tuple[str, int]]:
    return Counter((r.prefix, r.params.n) for r in policy.calls)


TREES = {"salt": st.integers(0, 2**31), "p_box": st.sampled_from([0.1, 0.3]),
         "p_eos": st.sampled_from([0.0, 0.1, 0.25]),
         "p_long": st.sampled_from([0.0, 0.15, 0.4]), "depth": st.integers(1, 5)}
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
COUNTS: Counter[str] = Counter()


@SETTINGS
@given(shape=st.sampled_from([(4, 4), (4, 2), (8, 4), (8, 2), (6, 3), (4, 1)]), **TREES)
def test_paper_beam_search_matches_the_seed(shape: tuple[int, int], salt: int, p_box: float,
                                             p_eos: float, p_long: float, depth: int) -> None:
    n, m = shape
    script = make_script(salt, p_box, p_eos, p_long, unique_root=False)
    rule = make_rule(salt)
    result, policy = run_testtime(script, rule, "beam_search", "paper", n, m, depth)
    port = PortBackend(script, rule)
    ends = seed_beam_search(port.gen, port.score, n, n // m, depth)
    assert [c.text for c in result.candidates] == ["".join(e.acts) for e in ends]
    assert [c.scores for c in result.candidates] == [e.values for e in ends]
    assert [c.finish_reason for c in result.candidates] == [e.end for e in ends]
    assert asked(policy) == Counter(port.asked)  # the same nodes expanded, retries included
    assert result.budget == n and len(result.candidates) <= n // m
    COUNTS["paper beam search"] += 1
    COUNTS["dropped samples"] += sum(t.status == "dropped" for t in result.tree)


@SETTINGS
@given(shape=st.sampled_from([(4, 2), (8, 4), (6, 2), (4, 4)]), **TREES)
def test_paper_dvts_is_independent_one_beam_searches(shape: tuple[int, int], salt: int,
                                                     p_box: float, p_eos: float,
                                                     p_long: float, depth: int) -> None:
    n, m = shape
    script = make_script(salt, p_box, p_eos, p_long, unique_root=True)
    rule = make_rule(salt)
    result, policy = run_testtime(script, rule, "dvts", "paper", n, m, depth)
    port = PortBackend(script, rule)
    ends = [e for _ in range(n // m) for e in seed_beam_search(port.gen, port.score, m, 1, depth)]
    assert [c.text for c in result.candidates] == ["".join(e.acts) for e in ends]
    assert [c.scores for c in result.candidates] == [e.values for e in ends]
    assert [c.origin for c in result.candidates] == list(range(n // m))  # one path each
    assert asked(policy) == Counter(port.asked)
    COUNTS["paper dvts"] += 1


@SETTINGS
@given(shape=st.sampled_from([(4, 2), (8, 4), (4, 1), (6, 3)]), dedupe=st.booleans(), **TREES)
def test_sal_beam_search_matches_search_and_learn(shape: tuple[int, int], dedupe: bool,
                                                  salt: int, p_box: float, p_eos: float,
                                                  p_long: float, depth: int) -> None:
    n, m = shape
    script = make_script(salt, p_box, p_eos, p_long, unique_root=False)
    rule = make_rule(salt)
    result, policy = run_testtime(script, rule, "beam_search", "sal", n, m, depth,
                                  filter_duplicates=dedupe)
    port = PortBackend(script, rule)
    beams = sal_beam_search(port.gen, port.score, n, m, depth, filter_duplicates=dedupe)
    assert [c.text for c in result.candidates] == [b.text for b in beams]
    assert [c.scores for c in result.candidates] == [b.scores for b in beams]
    assert asked(policy) == Counter(port.asked)
    assert len(result.candidates) == n
    COUNTS["sal beam search"] += 1


@SETTINGS
@given(shape=st.sampled_from([(4, 2), (8, 4), (4, 4), (6, 3)]), **TREES)
def test_sal_dvts_matches_search_and_learn(shape: tuple[int, int], salt: int, p_box: float,
                                           p_eos: float, p_long: float, depth: int) -> None:
    n, m = shape
    script = make_script(salt, p_box, p_eos, p_long, unique_root=False)
    rule = make_rule(salt)
    result, policy = run_testtime(script, rule, "dvts", "sal", n, m, depth)
    port = PortBackend(script, rule)
    out = sal_dvts(port.gen, port.score, n, m, depth)
    assert [c.text for c in result.candidates] == ["".join(steps) for steps, _ in out]
    assert [c.scores for c in result.candidates] == [sc for _, sc in out]
    assert asked(policy) == Counter(port.asked)
    assert len(result.candidates) == n
    COUNTS["sal dvts"] += 1


def test_zz_report_counts() -> None:
    """Printed with ``-s``: how many random trees each property ran on (in this worker)."""
    print("\nfidelity property tests:", dict(COUNTS))
    if COUNTS:
        assert all(COUNTS[k] >= 200 for k in ("paper beam search", "paper dvts",
                                              "sal beam search", "sal dvts") if k in COUNTS)
