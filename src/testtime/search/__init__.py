"""Search methods by name; each lives in its own module and is imported on first use.

An entry is ``"module:function"``: the function is the method's :data:`SearchFn`. A module
may also define ``make(config) -> SearchFn``, called once per run to bind settings that need
I/O (the adaptive solver reads its table there), and ``summarize(records, config) -> dict``,
whose result ``summary.json`` holds under the method's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol

from testtime.records import ProblemRecord
from testtime.search.base import SearchConfig, SearchFn


class RunConfig(Protocol):
    """What the registry reads of a ``testtime.config.RunConfig`` (a protocol, so that the
    config module, which validates method names against :data:`METHODS`, is not imported)."""

    @property
    def search(self) -> SearchConfig: ...

#: name -> "module:function"
METHODS: dict[str, str] = {
    "cot": "testtime.search.cot:cot",
    "best_of_n": "testtime.search.best_of_n:best_of_n",
    "beam_search": "testtime.search.beam_search:beam_search",
    "dvts": "testtime.search.dvts:dvts",
    "particle_filtering": "testtime.search.particle_filtering:particle_filtering",
    "adaptive_sc": "testtime.search.adaptive_sc:adaptive_sc",
    "deepconf": "testtime.search.deepconf_online:deepconf",
    "rebase": "testtime.search.rebase:rebase",
    "adaptive": "testtime.analysis.adaptive:solve",
}


def _module(name: str) -> tuple[Any, str]:
    if name not in METHODS:
        raise ValueError(f"unknown search method {name!r}; known: {', '.join(sorted(METHODS))}")
    module, func = METHODS[name].split(":")
    return importlib.import_module(module), func


def get_method(name: str) -> SearchFn:
    """The search function registered as ``name`` (without run settings)."""
    module, func = _module(name)
    fn: SearchFn = getattr(module, func)
    return fn


def method_for(config: RunConfig) -> SearchFn:
    """The search function of a run: the module's ``make(config)`` where it has one."""
    module, func = _module(config.search.method)
    make = getattr(module, "make", None)
    fn: SearchFn = make(config) if make is not None else getattr(module, func)
    return fn


def method_summary(config: RunConfig, records: Sequence[ProblemRecord]) -> dict[str, Any] | None:
    """The method's own section of ``summary.json``, or None when it has none."""
    module, _ = _module(config.search.method)
    summarize = getattr(module, "summarize", None)
    return None if summarize is None else dict(summarize(records, config))
