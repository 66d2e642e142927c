"""A generated arithmetic set with a real difficulty spread, for demos and smoke tests.

Five levels, sized so that a 135M-parameter model (SmolLM2-135M-Instruct) solves most level-1
problems and few level-5 ones:

* L1 one-step arithmetic on one-digit numbers ("What is 7 + 5?")
* L2 two-digit addition/subtraction or a one-digit multiplication
* L3 two operations with order of operations, or two-digit times one-digit
* L4 one-step word problems (apples eaten, packs bought, sweets shared)
* L5 multi-step word problems (price x quantity - coupon, change from a bill, ...)

Levels are interleaved (1, 2, 3, 4, 5, 1, 2, ...) so any prefix covers every level, and the
set is generated sequentially from ``random.Random(seed)``: ``demo-100`` starts with ``demo``.
Every answer is an exact non-negative integer computed by the generator. Metadata records how
to check it independently: ``expression`` (L1-L3, Python arithmetic) or ``formula`` evaluated
on ``values`` (L4-L5).

The templates of each level live in :mod:`.demo_templates` (re-exported here); this module
deals them out and is the registry loader.
"""

from __future__ import annotations

import random

from testtime.datasets.base import DEMO_SIZED_RE, DatasetError, DatasetSpec
from testtime.datasets.demo_templates import (  # noqa: F401  (re-exported for callers)
    FOODS,
    NAMES,
    TEMPLATES,
    THINGS,
    TREATS,
    Draft,
    Template,
    l1_add,
    l1_sub,
    l1_sum_words,
    l2_add,
    l2_mul,
    l2_sub,
    l3_add_mul,
    l3_mul_2x1,
    l3_mul_sub,
    l3_paren,
    l3_sub_div,
    l4_eat,
    l4_packs,
    l4_receive,
    l4_share,
    l4_unit_cost,
    l5_boxes_sold,
    l5_buy_and_share,
    l5_change,
    l5_coupon,
    l5_reading,
    l5_savings,
    l5_two_items,
)
from testtime.types import Problem

DEFAULT_SIZE = 20
DEFAULT_SEED = 0
MAX_SIZE = 100_000
#: Redraws allowed when a template repeats an earlier problem text (small levels run out of
#: distinct numbers in very large sets; after this many tries a repeat is accepted).
MAX_REDRAWS = 20


def generate_demo(size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> list[Problem]:
    """``size`` problems, levels 1-5 interleaved, ids ``demo-0001-L1``, ``demo-0002-L2``...

    Deterministic in ``seed`` (a private ``random.Random``, never the global one); problem i
    depends only on problems before it, so a larger size extends a smaller one.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"demo size must be an integer in 1..{MAX_SIZE}, got {size!r}")
    rng = random.Random(seed)
    # Each level deals its templates from a shuffled deck so consecutive problems of a level
    # use different templates.
    decks: dict[int, list[Template]] = {level: [] for level in TEMPLATES}
    seen: set[str] = set()
    problems: list[Problem] = []
    for index in range(size):
        level = index % 5 + 1
        for _ in range(MAX_REDRAWS):
            if not decks[level]:
                decks[level] = list(TEMPLATES[level])
                rng.shuffle(decks[level])
            draft = decks[level].pop()(rng)
            if draft.text not in seen:
                break
        seen.add(draft.text)
        problems.append(Problem(
            id=f"demo-{index + 1:04d}-L{level}", problem=draft.text, answer=str(draft.answer),
            level=level, metadata=draft.metadata,
        ))
    return problems


def load(spec: DatasetSpec) -> list[Problem]:
    """Registry loader: ``demo`` gives 20 problems, ``demo-N`` gives N (seed 0)."""
    name = spec.name_or_path.strip()
    match = DEMO_SIZED_RE.fullmatch(name)
    size = int(match.group(1)) if match else DEFAULT_SIZE
    if not 1 <= size <= MAX_SIZE:
        raise DatasetError(f"{name}: demo size must be in 1..{MAX_SIZE}, got {size}")
    return generate_demo(size, DEFAULT_SEED)
