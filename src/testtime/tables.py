"""Printed tables that never elide a number: a table too wide for the console folds.

Rich shrinks columns and crops cells ("9.381e+...", "Llama-3.(...)") when a table is wider than
the terminal (80 columns in a pipe). Every table of the CLI is made here and printed through
:func:`fit`: a table that fits is printed as it is; one that does not is printed folded, one
block per row with each column's header beside its value, so every number and name is shown in
full. Each command that prints tables also has a ``--json`` form for scripts.
"""

from __future__ import annotations

from typing import Any


def table(title: str | None = None, caption: str | None = None) -> Any:
    """A rich ``Table`` (print it with :func:`fit`)."""
    from rich.table import Table

    return Table(title=title, caption=caption, caption_justify="left")


def column(t: Any, header: str, numeric: bool = False) -> None:
    """Add a column: numbers right-aligned and never broken; text may wrap."""
    if numeric:
        t.add_column(header, justify="right", no_wrap=True)
    else:
        t.add_column(header, overflow="fold")


def natural_width(console: Any, t: Any) -> int:
    """The width ``t`` needs to show every cell unbroken."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10**6), t).maximum


def fit(console: Any, t: Any) -> Any:
    """``t`` itself when it fits ``console``, else the same cells folded row by row."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if natural_width(console, t) <= console.width:
        return t
    columns = list(t.columns)
    rows = list(zip(*(list(c.cells) for c in columns), strict=True))
    blocks: list[Any] = []
    if t.title:
        blocks.append(Text(str(t.title), style="bold"))
    for row in rows:
        block = Table(show_header=False, box=box.SIMPLE, pad_edge=False)
        block.add_column(overflow="fold", style="dim")
        block.add_column(overflow="fold")
        for col, cell in zip(columns, row, strict=True):
            block.add_row(str(col.header) or "-", cell)
        blocks.append(block)
    if t.caption:
        blocks.append(Text(str(t.caption)))
    return Group(*blocks)
