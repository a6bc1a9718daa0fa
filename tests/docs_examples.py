"""The code examples of the docs (docs/*.md) and the README: found, classified, and run.

Every fenced block of a page is one of:

- ``python``: run. The blocks of one page run in order in one namespace (as doctest runs a file),
  in a process of their own, with ``DATABASE_URL`` and ``SECRET_KEY`` set: the examples read
  their database and their secret from there, as an app does. After a block binds ``app``, one
  ``GET /`` goes through it (WSGI, or ASGI with its lifespan): it must not answer a 5xx.
- ``sh``, ``bash``, ``console``: each line (``$ `` prompts dropped, ``\\`` continuations joined) runs
  in bash, with ``PGSESSION_DSN`` set too, and must exit 0; ``# ...`` comments are output shown.
- ``text``, ``sql``, ``ini``, ``toml``: what a program prints, a file's contents (a crontab line), or SQL
  for a DBA: not examples (the SQL is compared with ``pgsession-wsgi init --sql`` by the tests).
- a MyST directive (```` ```{toctree} ````, ``{literalinclude}``, ...): not an example.

A block that is an example but must not run here (it installs packages, serves forever, or needs a
host that does not exist) is marked by an HTML comment on the line before it, which neither GitHub
nor Sphinx shows: ``<!-- not run: the reason -->``. A block of any other language, or a marker
without a reason, is an error: no example is skipped silently.

Run by tests/test_docs.py as ``python tests/docs_examples.py PAGE``; prints one JSON report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUN_PYTHON = {"python", "py"}
RUN_SHELL = {"sh", "bash", "console", "shell"}
NOT_EXAMPLES = {"text", "sql", "ini", "toml"}
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass
class Block:
    """One fenced block: where it starts (1-based line), its language, its code, and why not run."""

    line: int
    language: str
    code: str
    not_run: str | None = None

    @property
    def runs(self) -> bool:
        return self.not_run is None and self.language in RUN_PYTHON | RUN_SHELL


def blocks(text: str, page: str = "page") -> list[Block]:
    """The fenced blocks of a Markdown page; raises ValueError on an unclassified one."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = len(match["indent"]), match["fence"], match["info"].strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])
            i += 1
        i += 1
        language = info.split()[0] if info else ""
        if language.startswith("{"):
            continue  # a MyST directive
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = NOT_RUN.match(lines[before].strip()) if before >= 0 else None
        if before >= 0 and "not run" in lines[before] and not marker:
            raise ValueError(f"{page}:{before + 1}: a not-run marker needs a reason: "
                             "<!-- not run: why -->")
        if language not in RUN_PYTHON | RUN_SHELL | NOT_EXAMPLES:
            raise ValueError(f"{page}:{start + 1}: a code block of language {language!r}: mark it "
                             f"python or sh (run), or one of {sorted(NOT_EXAMPLES)} (not an example)")
        if marker and language in NOT_EXAMPLES:
            raise ValueError(f"{page}:{start + 1}: a {language} block is never run; drop the marker")
        found.append(Block(start + 1, language, "\n".join(body) + "\n",
                           marker["reason"] if marker else None))
    return found


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: prompts dropped, continuations joined, comments left out."""
    commands: list[str] = []
    pending = ""
    for raw in code.splitlines():
        line = raw[2:] if raw.startswith("$ ") else raw
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    return commands


def _smoke(app: Any) -> int:
    """One GET / through a WSGI or ASGI app (the ASGI one with its lifespan); its status."""
    import inspect

    call = app if inspect.isfunction(app) else type(app).__call__
    if inspect.iscoroutinefunction(call):
        from starlette.testclient import TestClient

        with TestClient(app) as client:
            return client.get("/").status_code
    from werkzeug.test import Client

    return Client(app).get("/").status_code


@dataclass
class Outcome:
    line: int
    language: str
    ran: bool
    error: str | None = None
    not_run: str | None = None


def run_page(path: Path) -> list[Outcome]:
    """Run every runnable block of the page, in order; each failure is reported, none stops it."""
    # A module of its own (dataclasses and pickling look their class's module up).
    module = types.ModuleType("__docs__")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    outcomes: list[Outcome] = []
    workdir = tempfile.mkdtemp(prefix="docs-examples-")
    for block in blocks(path.read_text(encoding="utf-8"), str(path)):
        if not block.runs:
            outcomes.append(Outcome(block.line, block.language, False, not_run=block.not_run))
            continue
        error = None
        if block.language in RUN_PYTHON:
            before = namespace.get("app")
            try:
                exec(compile(block.code, f"{path}:{block.line}", "exec"), namespace)
                app = namespace.get("app")
                if app is not None and app is not before:
                    status = _smoke(app)
                    if status >= 500:
                        error = f"GET / through the example's app answered {status}"
            except BaseException:  # an example failing in any way is a failed example
                error = traceback.format_exc(limit=-8)
        else:
            env = dict(os.environ, PGSESSION_DSN=os.environ["DATABASE_URL"])
            for command in shell_commands(block.code):
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, env=env,
                                      capture_output=True, text=True, timeout=120)
                if done.returncode:
                    error = f"$ {command}\nexit {done.returncode}\n{done.stdout}{done.stderr}"
                    break
        outcomes.append(Outcome(block.line, block.language, True, error))
    return outcomes


def main(argv: list[str]) -> int:
    page = Path(argv[0])
    try:
        outcomes = [asdict(outcome) for outcome in run_page(page)]
        report: dict[str, Any] = {"outcomes": outcomes}
    except ValueError as exc:
        report = {"error": str(exc)}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    # The examples' stores have pools and purge threads: leave without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
