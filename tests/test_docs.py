"""The docs: they build with warnings as errors, every example in them runs, and they look right.

- The Sphinx build (``python -m sphinx -W --keep-going -b html docs DIR``) fails on any warning: a
  broken reference to one of our names, a docstring reST error, a page left out of the toctree.
- Every name in a public module's ``__all__`` is in the API reference.
- The code blocks in the docstrings (fragments shown in the API reference) are valid Python.
- Every code example of docs/*.md and README.md runs against a real PostgreSQL (a database made
  for this module and dropped after), as tests/docs_examples.py describes; a block that must not
  run is marked so, with a reason, never skipped silently.
- The built index and one API page, opened in headless Chromium, have the navigation and a
  highlighted code block. Without Chromium that test is skipped with the install command, and
  fails instead when ``PGSESSION_REQUIRE_CHROMIUM=1`` (CI sets it).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import itertools
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import pytest
from docs_examples import NOT_EXAMPLES, blocks, shell_commands

import pgsession_wsgi
from pgsession_wsgi import PostgresStore

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
CHROMIUM_INSTALL = "apt-get install -y chromium"
# The modules whose __all__ is public API, each with a page in docs/api/.
PUBLIC_MODULES = [
    "pgsession_wsgi", "pgsession_wsgi.middleware", "pgsession_wsgi.store", "pgsession_wsgi.session",
    "pgsession_wsgi.errors", "pgsession_wsgi.flask", "pgsession_wsgi.asgi", "pgsession_wsgi.quart",
    "pgsession_wsgi.async_store", "pgsession_wsgi.flask_pg_session", "pgsession_wsgi.sqlalchemy",
    "pgsession_wsgi.codec", "pgsession_wsgi.cookies", "pgsession_wsgi.core", "pgsession_wsgi.cli",
    "pgsession_wsgi.defaults", "pgsession_wsgi.embedded", "pgsession_wsgi.litestar",
]


# -- the build -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built once for this module into a temporary directory; fails on a warning."""
    out = tmp_path_factory.mktemp("docs")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, f"the docs build failed (warnings are errors):\n{done.stderr}{done.stdout}"
    return out / "html"


def test_docs_build_with_warnings_as_errors(built: Path) -> None:
    assert (built / "index.html").is_file()
    assert (built / "api" / "pgsession_wsgi.html").is_file()


def anchors(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in site.rglob("*.html"):
        ids.update(re.findall(r'<dt class="sig[^"]*" id="([^"]+)"', page.read_text(encoding="utf-8")))
    return ids


def test_every_public_name_is_in_the_api_reference(built: Path) -> None:
    documented = anchors(built)
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            # A name re-exported by another public module is documented once, where an app imports it.
            places = [f"{other}.{name}" for other in PUBLIC_MODULES
                      if _same(getattr(importlib.import_module(other), name, _absent), obj)]
            if not any(place in documented for place in places):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"not in the API reference: {missing}"


_absent = object()


def _same(a: Any, b: Any) -> bool:
    if a is _absent:
        return False
    return a is b or (isinstance(a, (int, str)) and type(a) is type(b) and a == b)


def test_the_sql_in_the_docs_is_what_init_prints() -> None:
    """A DBA copies the DDL from the deployment page: it is the store's own, word for word."""
    page = (DOCS / "deployment.md").read_text(encoding="utf-8")
    ddl = PostgresStore("postgresql://app@db/app").ddl()
    sql_blocks = [block.code for block in blocks(page) if block.language == "sql"]
    assert ddl in sql_blocks


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    """The README introduces and points to the docs. It is the package's long description too,
    where a relative link leads nowhere: so it links only to https:// addresses, and names the
    files of the source instead (each of which exists, and every guide in docs/ is named)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) < 8000
    for command in ('pip install -e ".[demo,test]"', "pgsession-wsgi demo", "python -m pytest",
                    "python -m sphinx -W --keep-going -b html docs docs/_build/html"):
        assert command in readme
    links = re.findall(r"\]\(\s*<?([^)\s>]*)", readme)                         # [text](x), ![alt](x)
    links += re.findall(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]*)", readme, re.M)        # [label]: x
    links += re.findall(r"""\b(?:href|src)\s*=\s*["']?([^"'\s>]*)""", readme)   # <a href=x>
    assert [link for link in links if not link.startswith("https://")] == []
    named = set(re.findall(r"`((?:docs/)?[\w.-]+\.md|LICENSE)`", readme))
    assert {"docs/quickstart.md", "CHANGES.md", "LICENSE"} <= named
    assert [name for name in named if not (ROOT / name).is_file() and not (DOCS / name).is_file()] == []
    guides = {page.name for page in DOCS.glob("*.md")} - {"index.md", "changes.md"}
    assert sorted(guides - {Path(name).name for name in named}) == []


# -- the pages read whole on a code host -----------------------------------------------------------

# MyST syntax a code host shows raw: a role (``{py:class}`X` ``), a directive fence (```` ```{name} ````
# or ``:::{name}``), a ``(label)=`` target. The pages that need a directive, and which one.
MYST_ROLE = re.compile(r"\{[a-z][\w:.-]*\}`")
MYST_DIRECTIVE = re.compile(r"^ *(?:`{3,}|~{3,}|:{3,}) *\{([\w:-]+)\}")
MYST_TARGET = re.compile(r"^\([\w.:-]+\)=\s*$")
KEEPS_A_DIRECTIVE = {
    # Sphinx's root page: its toctrees make the site's navigation. They are hidden, and a plain
    # list of the same pages follows each (test_the_index_lists_the_pages_its_toctrees_hold).
    "index.md": "toctree",
    # The changes are written once, in CHANGES.md at the top, which a code host shows as it is.
    "changes.md": "include",
}


def _outside_code_blocks(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for the lines of a Markdown page that are not in a fenced block
    (the fences of a directive are yielded: they are what is looked for)."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        opening = re.match(r"^ *(`{3,}|~{3,}|:{3,})", line)
        if fence is None:
            yield number, line
            if opening:
                fence = opening.group(1)
        elif re.match(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
            fence = None


def test_the_pages_use_no_myst_only_syntax() -> None:
    """docs/*.md read whole on a code host too: names are inline code and links are Markdown
    links (MyST makes ``[text](page.md#section)`` a checked cross-reference)."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for number, line in _outside_code_blocks(page.read_text(encoding="utf-8")):
            where = f"docs/{page.name}:{number}: {line.strip()}"
            directive = MYST_DIRECTIVE.match(line)
            kept = KEEPS_A_DIRECTIVE.get(page.name)
            refused_directive = directive is not None and directive.group(1) != kept
            if refused_directive or MYST_ROLE.search(line) or MYST_TARGET.match(line):
                found.append(where)
    assert not found, "MyST syntax that a code host shows raw:\n" + "\n".join(found)
    # The checks themselves.
    assert MYST_ROLE.search("a {py:class}`~pgsession_wsgi.Session` and {doc}`wsgi`")
    assert not MYST_ROLE.search('f"{ended} other session(s)"')
    assert MYST_DIRECTIVE.match("```{note}") and MYST_DIRECTIVE.match(":::{toctree}")
    assert [n for n, _ in _outside_code_blocks("a\n```python\n{py:x}`y`\n```\nb\n")] == [1, 2, 5]


def test_the_index_lists_the_pages_its_toctrees_hold() -> None:
    """The index's toctrees (the navigation) are hidden; under each, a plain list of the same
    pages in the same order, which a code host and the site both show."""
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    toctrees = re.findall(r"^```\{toctree\}\n(.*?)^```\n\n((?:- [^\n]*\n)+)", text, re.M | re.S)
    assert len(toctrees) == text.count("```{toctree}") == 3
    for body, listed in toctrees:
        options = [line for line in body.splitlines() if line.startswith(":")]
        entries = [line for line in body.splitlines() if line and not line.startswith(":")]
        assert ":hidden:" in options, body
        links = re.findall(r"^- \[[^\]]+\]\(([^)#]+)\)", listed, re.M)
        assert [link.rsplit(".", 1)[0] for link in links] == entries
        assert all((DOCS / link).is_file() for link in links), links


def test_the_quickstart_excerpt_is_the_example_app() -> None:
    """docs/quickstart.md shows the example app's ``counter`` as it is in examples/wsgi_app.py."""
    source = (ROOT / "examples" / "wsgi_app.py").read_text(encoding="utf-8")
    counter = next(node for node in ast.parse(source).body
                   if isinstance(node, ast.FunctionDef) and node.name == "counter")
    page = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    shown = [block.code.strip("\n") for block in blocks(page) if block.code.startswith("def counter(")]
    assert shown == [ast.get_source_segment(source, counter)]


def test_the_names_the_pages_show_exist() -> None:
    """What a role checked before: every ``pgsession_wsgi.name`` shown as inline code on a page
    is importable (a renamed class or module fails here, not on a reader)."""
    missing = []
    for page in PAGES:
        for name in sorted(set(re.findall(r"`(pgsession_wsgi(?:\.[A-Za-z_]\w*)*)`",
                                          page.read_text(encoding="utf-8")))):
            parts = name.split(".")
            try:
                obj = importlib.import_module(parts[0])
                for i, part in enumerate(parts[1:], 1):
                    try:
                        obj = getattr(obj, part)
                    except AttributeError:
                        obj = importlib.import_module(".".join(parts[:i + 1]))
            except (ImportError, AttributeError):
                missing.append(f"{page.name}: {name}")
    assert not missing, f"names on the pages that do not exist: {missing}"


def docstring_code_blocks() -> Iterator[tuple[str, str]]:
    """``(where, code)`` for every ``::`` literal block in the package's docstrings."""
    for info in pkgutil.walk_packages(pgsession_wsgi.__path__, "pgsession_wsgi."):
        if info.name.startswith("pgsession_wsgi.examples") or info.name.endswith("__main__"):
            continue
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = (ast.get_docstring(node, clean=True) or "").splitlines()
            for i, line in enumerate(lines):
                if not line.rstrip().endswith("::") or line.lstrip().startswith(".."):
                    continue
                body = _indented_after(lines, i)
                if any(text.strip() for text in body):
                    yield f"{info.name}.{getattr(node, 'name', '')}", textwrap.dedent("\n".join(body))


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip())


def _indented_after(lines: list[str], i: int) -> list[str]:
    """The lines after ``lines[i]`` indented deeper than it (blank lines included): its block."""
    base = _indent(lines[i])
    return list(itertools.takewhile(lambda text: not text.strip() or _indent(text) > base, lines[i + 1:]))


def test_the_docstrings_code_blocks_are_python() -> None:
    """The API reference's snippets are fragments (``app`` is yours), so they are only compiled."""
    found = list(docstring_code_blocks())
    assert len(found) >= 10
    for where, code in found:
        try:
            compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{where}: a code block in the docstring is not Python: {exc}\n{code}")


# -- the examples --------------------------------------------------------------------------------


def url_of(dsn: str, dbname: str) -> str:
    """A ``postgresql://`` URL for ``dbname`` on the server ``dsn`` names (SQLAlchemy needs a URL)."""
    params = psycopg2.extensions.parse_dsn(dsn)
    user = quote(params.get("user", "postgres"), safe="")
    password = params.get("password")
    auth = user + (":" + quote(password, safe="") if password else "")
    host = params.get("host", "")
    port = params.get("port", "5432")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{dbname}?host={quote(host, safe='')}&port={port}"
    return f"postgresql://{auth}@{host or 'localhost'}:{port}/{dbname}"


@pytest.fixture(scope="module")
def database_url(pg_dsn: str) -> Iterator[str]:
    """A database of its own for the examples (they use the default ``public.pgsession``)."""
    name = f"docs_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield url_of(pg_dsn, name)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_example_on_the_page_runs(page: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGSESSION_")}
    env.update(DATABASE_URL=database_url, SECRET_KEY="docs-examples-secret",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("docs_examples.py")), str(page)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.stdout.strip(), f"the example runner printed nothing:\n{done.stderr}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in report, report.get("error")
    failed = [f"{page.name}:{o['line']} ({o['language']}):\n{o['error']}"
              for o in report["outcomes"] if o["error"]]
    assert not failed, "\n\n".join(failed)


def test_pages_have_examples_that_run() -> None:
    """Most examples run: the not-run marker stays the exception it should be."""
    counted = [(block.runs, block.language) for page in PAGES
               for block in blocks(page.read_text(encoding="utf-8"), str(page))]
    ran = sum(1 for runs, _ in counted if runs)
    marked = sum(1 for runs, language in counted if not runs and language not in NOT_EXAMPLES)
    assert ran >= 20 and marked <= ran // 2, (ran, marked)


def test_the_block_reader_knows_every_kind_of_block() -> None:
    page = """
```python
x = 1
```

<!-- not run: it serves forever -->
```sh
pgsession-wsgi demo
```

```text
output
```

```{toctree}
api/index
```
"""
    found = blocks(page)
    assert [(b.language, b.runs, b.not_run) for b in found] == [
        ("python", True, None), ("sh", False, "it serves forever"), ("text", False, None)]
    with pytest.raises(ValueError, match="language 'js'"):
        blocks("```js\nx\n```\n")
    with pytest.raises(ValueError, match="language ''"):
        blocks("```\nx\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        blocks("<!-- not run -->\n```python\nx\n```\n")
    assert shell_commands("$ a \\\n    --b  # c\n# output\n\nd\n") == ["a      --b  # c", "d"]


# -- in a real browser ---------------------------------------------------------------------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = f"headless Chromium is not installed ({CHROMIUM_INSTALL})"
    if os.environ.get("PGSESSION_REQUIRE_CHROMIUM", "") not in ("", "0"):
        pytest.fail(f"{reason}; PGSESSION_REQUIRE_CHROMIUM is set, so it is required", pytrace=False)
    pytest.skip(f"{reason}; set PGSESSION_REQUIRE_CHROMIUM=1 to fail instead")


def rendered(browser: str, page: Path) -> str:
    """The page's DOM after Chromium loaded it and ran its scripts."""
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_site_renders_in_a_real_browser(built: Path) -> None:
    browser = chromium()
    index = rendered(browser, built / "index.html")
    api = rendered(browser, built / "api" / "pgsession_wsgi.html")
    for dom in (index, api):
        nav = re.search(r'<div class="sidebar-tree">(.*?)</div>', dom, re.S)
        assert nav, "no navigation"
        links = re.findall(r'<a class="reference internal" href="[^"]+">([^<]+)</a>', nav.group(1))
        for title in ("Quick start", "Plain WSGI", "Flask", "Security", "Deployment", "API reference"):
            assert title in links, f"the navigation lacks {title!r}: {links}"
        # A code block highlighted by Pygments: its tokens in spans of their own.
        assert re.search(r'<div class="highlight"><pre>(?:(?!</pre>).)*<span class="\w+">', dom, re.S)
    # The API page's Python: keywords and strings told apart.
    assert re.search(r'<div class="highlight"><pre>(?:(?!</pre>).)*<span class="kn">(from|import)</span>',
                     api, re.S)
    assert 'id="pgsession_wsgi.SessionMiddleware"' in api
    assert pgsession_wsgi.__version__ in index
