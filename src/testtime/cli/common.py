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

from testtime.cli.engine_cli import KV_CACHE_HELP  # noqa: F401  (re-exported)
from testtime.config import EMBEDDED_PATH_TOKENS, is_embedded, recommended  # noqa: F401
from testtime.types import PAPER_PATH_TOKENS as DEFAULT_PATH_TOKENS  # noqa: F401  (re-exported)

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


#: Set on an exception that left a ``strict`` :func:`user_errors` block: a bug, whose
#: traceback an enclosing block must not shorten to one line.
_INTERNAL = "_testtime_internal_error"


def user_error_types(strict: bool = False) -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix (printed as one line, exit 2).

    ``strict``: only the declared user errors (``UserError`` and its kin: bad dataset lines,
    run directories, locks, executors, missing files). Otherwise any ``ValueError`` too: the
    option-parsing phase of a command, where every ``ValueError`` is a config validator's
    verdict on what the user typed."""
    from pydantic import ValidationError

    from testtime.datasets.base import DatasetError
    from testtime.distributed.driver import ExecutorError
    from testtime.errors import UserError
    from testtime.rundir import RunDirError
    from testtime.store import RunLocked

    declared = (UserError, DatasetError, FileNotFoundError, RunDirError, ExecutorError,
                ValidationError, RunLocked)
    return declared if strict else (ValueError, *declared)


@contextmanager
def user_errors(strict: bool = False) -> Iterator[None]:
    """Turn user errors raised inside into one line and exit code 2.

    ``strict`` (around loading models and running): only declared user errors are shortened;
    any other exception (a ``ValueError`` raised by a bug inside a backend) keeps its
    traceback, also through an enclosing non-strict block."""
    from pydantic import ValidationError

    try:
        yield
    except typer.Exit:
        raise
    except ValidationError as exc:
        fail(validation_message(exc))
    except user_error_types(strict) as exc:
        if getattr(exc, _INTERNAL, False):
            raise
        # Messages about saved run configs name their fields as config.json spells them.
        fail(str(exc) if getattr(exc, "names_config_fields", False) else option_names(str(exc)))
    except Exception as exc:
        if strict:
            setattr(exc, _INTERNAL, True)
        raise


def show(*renderables: Any) -> None:
    """Print tables (folded where they would not fit: no cell is ever cropped) and text."""
    from testtime.tables import fit

    for r in renderables:
        console.print(fit(console, r) if type(r).__name__ == "Table" else r)


def print_json(data: Any) -> None:
    """JSON for scripts: plain stdout, no colours, no wrapping."""
    print(json.dumps(data, indent=2, default=str))


def open_service_socket(host: str, port: int, api_key: str | None, serves: str) -> Any:
    """A service's listening socket, bound before any model loads so that a busy port fails
    fast (one line naming ``--port``); warns when it is reachable from other machines without
    a key (``serves``: what such a caller could use)."""
    from testtime.serving import bind_socket

    if not is_loopback(host) and api_key is None:
        err_console.print(f"[yellow]warning:[/yellow] serving on {host} without --api-key: "
                          f"anyone who can reach this port can {serves}")
    try:
        return bind_socket(host, port)
    except OSError as exc:
        fail(f"--port {port}: {exc}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only: servers warn otherwise."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
