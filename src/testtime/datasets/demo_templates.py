"""The problem templates of the ``demo`` set, level by level (see :mod:`.demo` for the set).

A :data:`Template` draws its numbers (and names, foods, things) from the ``random.Random`` it
is given, and only from it, so the generator stays deterministic in its seed; it returns a
:class:`Draft` whose answer is an exact non-negative integer computed here, and whose metadata
says how to check that answer independently: the template's name plus ``expression`` (L1-L3,
Python arithmetic) or ``formula`` evaluated on ``values`` (L4-L5). Divisions are always exact.
:data:`TEMPLATES` lists the templates of each level 1-5; L1/L2 templates also vary their wording.

The order of ``rng`` calls inside each template is part of the contract: changing it changes
every generated set from the first problem that uses the template on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

#: (name, subject pronoun, object pronoun)
NAMES = (("Mia", "she", "her"), ("Leo", "he", "him"), ("Ava", "she", "her"),
         ("Noah", "he", "him"), ("Zoe", "she", "her"), ("Sam", "he", "him"),
         ("Lily", "she", "her"), ("Omar", "he", "him"), ("Emma", "she", "her"),
         ("Ben", "he", "him"), ("Nina", "she", "her"), ("Raj", "he", "him"))
#: (singular, plural) of things that can be eaten
FOODS = (("apple", "apples"), ("cookie", "cookies"), ("orange", "oranges"),
         ("cupcake", "cupcakes"), ("strawberry", "strawberries"), ("banana", "bananas"))
#: (singular, plural) of things that are kept, bought and shared
THINGS = (("pencil", "pencils"), ("sticker", "stickers"), ("marble", "marbles"),
          ("book", "books"), ("card", "cards"), ("balloon", "balloons"),
          ("crayon", "crayons"), ("toy car", "toy cars"), ("notebook", "notebooks"))
TREATS = ("game", "kite", "ball", "puzzle", "backpack", "lamp")


class Draft(NamedTuple):
    """A generated problem before it gets its id and level."""

    text: str
    answer: int
    metadata: dict[str, Any]


Template = Callable[[random.Random], Draft]


def _expr(name: str, text: str, expression: str, answer: int) -> Draft:
    return Draft(text, answer, {"template": name, "expression": expression})


def _word(name: str, text: str, answer: int, formula: str, **values: int) -> Draft:
    return Draft(text, answer, {"template": name, "formula": formula, "values": values})


def _person(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(NAMES)


def _two_people(rng: random.Random) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    first, second = rng.sample(NAMES, 2)
    return first, second


# ---- Level 1: one step, one-digit numbers -------------------------------------------------

def l1_add(rng: random.Random) -> Draft:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    form = rng.choice(("What is {a} + {b}?", "Compute {a} + {b}.", "What is {a} plus {b}?"))
    return _expr("l1_add", form.format(a=a, b=b), f"{a} + {b}", a + b)


def l1_sub(rng: random.Random) -> Draft:
    a = rng.randint(2, 9)
    b = rng.randint(1, a - 1)
    form = rng.choice(("What is {a} - {b}?", "What is {a} minus {b}?"))
    return _expr("l1_sub", form.format(a=a, b=b), f"{a} - {b}", a - b)


def l1_sum_words(rng: random.Random) -> Draft:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return _expr("l1_sum_words", f"What is the sum of {a} and {b}?", f"{a} + {b}", a + b)


# ---- Level 2: two-digit addition/subtraction, one-digit multiplication -------------------

def l2_add(rng: random.Random) -> Draft:
    a, b = rng.randint(11, 69), rng.randint(11, 39)
    return _expr("l2_add", f"What is {a} + {b}?", f"{a} + {b}", a + b)


def l2_sub(rng: random.Random) -> Draft:
    a = rng.randint(30, 99)
    b = rng.randint(11, a - 5)
    form = rng.choice(("What is {a} - {b}?", "Compute {a} - {b}."))
    return _expr("l2_sub", form.format(a=a, b=b), f"{a} - {b}", a - b)


def l2_mul(rng: random.Random) -> Draft:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    form = rng.choice(("What is {a} × {b}?", "What is the product of {a} and {b}?",
                       "What is {a} times {b}?"))
    return _expr("l2_mul", form.format(a=a, b=b), f"{a} * {b}", a * b)


# ---- Level 3: two operations (order of operations), two-digit x one-digit ----------------

def l3_add_mul(rng: random.Random) -> Draft:
    a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 9)
    return _expr("l3_add_mul", f"What is {a} + {b} × {c}?", f"{a} + {b} * {c}", a + b * c)


def l3_mul_sub(rng: random.Random) -> Draft:
    a, b = rng.randint(3, 9), rng.randint(3, 9)
    c = rng.randint(1, a * b - 1)
    return _expr("l3_mul_sub", f"What is {a} × {b} - {c}?", f"{a} * {b} - {c}", a * b - c)


def l3_paren(rng: random.Random) -> Draft:
    a, b, c = rng.randint(2, 15), rng.randint(2, 15), rng.randint(2, 6)
    return _expr("l3_paren", f"What is ({a} + {b}) × {c}?", f"({a} + {b}) * {c}", (a + b) * c)


def l3_sub_div(rng: random.Random) -> Draft:
    c, q = rng.randint(2, 9), rng.randint(2, 9)
    b = c * q  # exact division
    a = rng.randint(q + 1, q + 40)
    return _expr("l3_sub_div", f"What is {a} - {b} ÷ {c}?", f"{a} - {b} / {c}", a - q)


def l3_mul_2x1(rng: random.Random) -> Draft:
    a, b = rng.randint(12, 49), rng.randint(3, 9)
    form = rng.choice(("What is {a} × {b}?", "Compute {a} × {b}."))
    return _expr("l3_mul_2x1", form.format(a=a, b=b), f"{a} * {b}", a * b)


# ---- Level 4: one-step word problems ------------------------------------------------------

def l4_eat(rng: random.Random) -> Draft:
    (name, he, _), (_, foods) = _person(rng), rng.choice(FOODS)
    have = rng.randint(8, 30)
    eaten = rng.randint(2, have - 1)
    text = (f"{name} has {have} {foods}. {he.capitalize()} eats {eaten} of them. "
            f"How many {foods} does {name} have left?")
    return _word("l4_eat", text, have - eaten, "have - eaten", have=have, eaten=eaten)


def l4_receive(rng: random.Random) -> Draft:
    (name, _, him), (friend, _, _) = _two_people(rng)
    _, things = rng.choice(THINGS)
    have, given = rng.randint(5, 40), rng.randint(3, 30)
    text = (f"{name} has {have} {things}. {friend} gives {him} {given} more. "
            f"How many {things} does {name} have now?")
    return _word("l4_receive", text, have + given, "given + have", have=have, given=given)


def l4_packs(rng: random.Random) -> Draft:
    (name, _, _), (_, things) = _person(rng), rng.choice(THINGS)
    packs, per_pack = rng.randint(2, 9), rng.randint(3, 12)
    text = (f"{name} buys {packs} packs of {things}. Each pack has {per_pack} {things}. "
            f"How many {things} does {name} buy in total?")
    return _word("l4_packs", text, packs * per_pack, "per_pack * packs",
                 packs=packs, per_pack=per_pack)


def l4_share(rng: random.Random) -> Draft:
    (name, _, _), (_, foods) = _person(rng), rng.choice(FOODS)
    friends, each = rng.randint(2, 8), rng.randint(2, 9)
    total = friends * each  # shared without remainder
    text = (f"{name} shares {total} {foods} equally among {friends} friends. "
            f"How many {foods} does each friend get?")
    return _word("l4_share", text, each, "total / friends", total=total, friends=friends)


def l4_unit_cost(rng: random.Random) -> Draft:
    thing, things = rng.choice(THINGS)
    price, count = rng.randint(2, 9), rng.randint(2, 9)
    text = f"One {thing} costs {price} dollars. How many dollars do {count} {things} cost?"
    return _word("l4_unit_cost", text, price * count, "count * price", price=price, count=count)


# ---- Level 5: multi-step word problems ----------------------------------------------------

def l5_coupon(rng: random.Random) -> Draft:
    (name, he, _), (_, things) = _person(rng), rng.choice(THINGS)
    count, price = rng.randint(3, 9), rng.randint(4, 15)
    coupon = rng.randint(2, min(15, count * price - 1))
    text = (f"{name} buys {count} {things} that cost {price} dollars each. {he.capitalize()} "
            f"uses a coupon for {coupon} dollars off the total. How many dollars does {name} pay?")
    return _word("l5_coupon", text, count * price - coupon, "price * count - coupon",
                 count=count, price=price, coupon=coupon)


def l5_change(rng: random.Random) -> Draft:
    (name, _, _), (_, foods) = _person(rng), rng.choice(FOODS)
    count, price = rng.randint(2, 8), rng.randint(2, 9)
    cost = count * price
    bill = next(b for b in (20, 50, 100) if b > cost)
    text = (f"{name} buys {count} {foods} at {price} dollars each and pays with a {bill}-dollar "
            f"bill. How many dollars of change does {name} get?")
    return _word("l5_change", text, bill - cost, "bill - (price * count)",
                 count=count, price=price, bill=bill)


def l5_two_items(rng: random.Random) -> Draft:
    (name, _, _) = _person(rng)
    (_, first), (_, second) = rng.sample(THINGS, 2)
    n1, p1, n2, p2 = rng.randint(2, 6), rng.randint(2, 9), rng.randint(2, 6), rng.randint(2, 9)
    text = (f"{name} buys {n1} {first} for {p1} dollars each and {n2} {second} for {p2} dollars "
            f"each. How many dollars does {name} spend in total?")
    return _word("l5_two_items", text, n1 * p1 + n2 * p2, "p2 * n2 + p1 * n1",
                 n1=n1, p1=p1, n2=n2, p2=p2)


def l5_boxes_sold(rng: random.Random) -> Draft:
    _, things = rng.choice(THINGS + FOODS)
    boxes, per_box = rng.randint(3, 9), rng.randint(6, 12)
    sold = rng.randint(5, boxes * per_box - 1)
    text = (f"A store has {boxes} boxes of {things} with {per_box} {things} in each box. "
            f"It sells {sold} {things}. How many {things} does the store have left?")
    return _word("l5_boxes_sold", text, boxes * per_box - sold, "-sold + per_box * boxes",
                 boxes=boxes, per_box=per_box, sold=sold)


def l5_savings(rng: random.Random) -> Draft:
    (name, he, _), treat = _person(rng), rng.choice(TREATS)
    weekly, weeks = rng.randint(3, 12), rng.randint(3, 8)
    spent = rng.randint(5, weekly * weeks - 1)
    text = (f"{name} saves {weekly} dollars each week for {weeks} weeks. Then {he} spends "
            f"{spent} dollars on a {treat}. How many dollars does {name} have left?")
    return _word("l5_savings", text, weekly * weeks - spent, "weeks * weekly - spent",
                 weekly=weekly, weeks=weeks, spent=spent)


def l5_reading(rng: random.Random) -> Draft:
    (name, he, _) = _person(rng)
    monday = rng.randint(5, 25)
    total = rng.randint(3 * monday + 5, 3 * monday + 120)
    text = (f"{name}'s book has {total} pages. {he.capitalize()} reads {monday} pages on Monday "
            f"and twice as many pages on Tuesday. How many pages does {name} still have to read?")
    return _word("l5_reading", text, total - 3 * monday, "total - (monday + 2 * monday)",
                 total=total, monday=monday)


def l5_buy_and_share(rng: random.Random) -> Draft:
    (name, he, _), (_, foods) = _person(rng), rng.choice(FOODS)
    friends, each = rng.randint(2, 6), rng.randint(2, 8)
    bought = rng.randint(1, friends * each - 1)
    have = friends * each - bought  # have + bought shares without remainder
    text = (f"{name} has {have} {foods} and buys {bought} more. {he.capitalize()} shares all of "
            f"them equally among {friends} friends. How many {foods} does each friend get?")
    return _word("l5_buy_and_share", text, each, "(have + bought) / friends",
                 have=have, bought=bought, friends=friends)


TEMPLATES: dict[int, tuple[Template, ...]] = {
    1: (l1_add, l1_sub, l1_sum_words),
    2: (l2_add, l2_sub, l2_mul),
    3: (l3_add_mul, l3_mul_sub, l3_paren, l3_sub_div, l3_mul_2x1),
    4: (l4_eat, l4_receive, l4_packs, l4_share, l4_unit_cost),
    5: (l5_coupon, l5_change, l5_two_items, l5_boxes_sold, l5_savings, l5_reading,
        l5_buy_and_share),
}
"""Templates per level (L1/L2 templates also vary their wording)."""
