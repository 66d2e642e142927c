"""What every command shares: the console, one-line user errors, JSON output, run options.

User errors (a bad option value, a missing file, a model that cannot be loaded, a config the
validators reject) end in exactly one line, ``error: ...`` naming the option and value, and
exit code 2: no traceback, no pydantic dump. The line is printed without wrapping whatever
the terminal width (tests assert on it in narrow consoles and long temp paths).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

from testtime.config import EMBEDDED_PATH_TOKENS, is_embedded, recommended  # noqa: F401

DEFAULT_PATH_TOKENS = 8192
KV_CACHE_HELP = ("GiB an in-process PRM keeps for the keys/values of scored prefixes, so a "
                 "path grown by a step runs only its new tokens (same scores; 0: rescore "
                 "every path in full) [default: 8 on a GPU (at most a quarter of its free "
                 "memory), 1 on the CPU]")
#: What a bare ``--ray`` stands for (typer options cannot take an optional value, so ``main``
#: fills it in): a local Ray, or the cluster ``$RAY_ADDRESS`` names.
RAY_LOCAL = "local"

#: Config field names -> the CLI options that set them (for validation messages).
FIELD_OPTIONS: dict[str, str] = {
    "search.n": "--n", "search.beam_width": "--beam-width", "search.max_depth": "--max-depth",
    "search.max_step_tokens": "--max-step-tokens", "search.max_path_tokens":
        "--max-path-tokens", "search.lookahead": "--lookahead", "search.method": "--method",
    "search.semantics": "--semantics", "search.answer_grouping": "--answer-grouping",
    "search.pf_temperature": "--pf-temperature", "search.sc_threshold": "--sc-threshold",
    "search.sc_criterion": "--sc-criterion", "search.sc_round": "--sc-round",
    "sampling.temperature": "--temperature", "sampling.top_p": "--top-p",
    "max_concurrent_problems": "--concurrency", "dataset.limit": "--limit",
    "adaptive.budget": "--budget", "adaptive.pilot": "--pilot", "adaptive.scheme": "--scheme",
    "adaptive.escalation": "--escalation", "adaptive.table": "--table",
}


def sampling_and_path(policy: str, prompt: str | None, temperature: float | None,
                      top_p: float | None, seed: int, path: int | None) -> tuple[Any, int]:
    """The run's ``SamplingConfig`` and ``--max-path-tokens``: what was given, else the
    policy family's recommended values (:func:`testtime.config.recommended`)."""
    import dataclasses

    rec, rec_path = recommended(policy, prompt)
    given = {k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None}
    return dataclasses.replace(rec, seed=seed, **given), path or rec_path


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed: an error is one line."""
    return " ".join(str(text).split())


def option_names(message: str) -> str:
    """Config field names in a validation message replaced by the options that set them."""
    for field_name, option in sorted(FIELD_OPTIONS.items(), key=lambda kv: -len(kv[0])):
        message = re.sub(rf"(?<![\w.]){re.escape(field_name)}(?![\w])", option, message)
    return message


def validation_message(exc: Any) -> str:
    """The first problem of a pydantic ``ValidationError``, as one line naming the option."""
    errors = exc.errors(include_url=False)
    if not errors:
        return one_line(str(exc))
    e = errors[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = str(e["msg"]).removeprefix("Value error, ")
    where = FIELD_OPTIONS.get(loc, loc)
    value = e.get("input")
    if where and isinstance(value, str | int | float) and where != loc:
        return option_names(f"{where} {value}: {msg}")
    return option_names(f"{where}: {msg}" if where else msg)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` as one unwrapped line and exit."""
    err_console.print(f"[red]error:[/red] {one_line(message)}", soft_wrap=True,
                      highlight=False, markup=True)
    raise typer.Exit(code)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix (printed as one line, exit 2)."""
    from pydantic import ValidationError

    from testtime.distributed.driver import ExecutorError
    from testtime.rundir import RunDirError
    from testtime.store import RunLocked

    return (ValueError, FileNotFoundError, RunDirError, ExecutorError, ValidationError,
            RunLocked)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn user errors raised inside into one line and exit code 2."""
    from pydantic import ValidationError

    try:
        yield
    except typer.Exit:
        raise
    except ValidationError as exc:
        fail(validation_message(exc))
    except user_error_types() as exc:
        # Messages about saved run configs name their fields as config.json spells them.
        fail(str(exc) if getattr(exc, "names_config_fields", False) else option_names(str(exc)))


def show(*renderables: Any) -> None:
    """Print tables (folded where they would not fit: no cell is ever cropped) and text."""
    from testtime.tables import fit

    for r in renderables:
        console.print(fit(console, r) if type(r).__name__ == "Table" else r)


def print_json(data: Any) -> None:
    """JSON for scripts: plain stdout, no colours, no wrapping."""
    print(json.dumps(data, indent=2, default=str))
