"""Search methods by name; each lives in its own module and is imported on first use."""

from __future__ import annotations

import importlib

from testtime.search.base import SearchFn

#: name -> "module:function"
METHODS: dict[str, str] = {
    "cot": "testtime.search.cot:cot",
    "best_of_n": "testtime.search.best_of_n:best_of_n",
    "beam_search": "testtime.search.beam_search:beam_search",
    "dvts": "testtime.search.dvts:dvts",
}


def get_method(name: str) -> SearchFn:
    if name not in METHODS:
        raise ValueError(f"unknown search method {name!r}; known: {', '.join(sorted(METHODS))}")
    module, func = METHODS[name].split(":")
    fn: SearchFn = getattr(importlib.import_module(module), func)
    return fn
