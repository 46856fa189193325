"""The data documents a bundle carries, checked against their JSON Schemas.

``opa build`` loads every ``*.json``, ``*.yaml`` and ``*.yml`` file under a source root
(``pdp/``, ``data/``) as data, merged at its folder's path: ``data/inventory/data.json``
and ``data/inventory/extra.json`` both become part of ``data.inventory``, and
``data/x.json`` merges at the root. The policies read those documents with the types they
assume (a ``purposes`` member that is ``false`` instead of a list was read by the fast path
as "lists none"), so nothing goes into a bundle whose data does not match its schema:

- every data file is JSON, read by the service's one strict parser (:mod:`pdp.jsonparse`:
  duplicate members, big integers, lone surrogates refused); YAML is refused (it has no one
  strict reading: duplicate keys, implicit types);
- each top-level document (``data.<name>``) has a schema: the shipped library's documents
  (:data:`BUILTIN`) in ``pdp/schemas/``; any other in the policy directory's
  ``schemas/<name>.schema.json`` (not a source root, so never bundled). A document without
  one is refused, as is a source document named like what the build derives
  (:data:`RESERVED`);
- a bundle archive (``*.tar.gz``) under a source root is refused: ``opa build`` skips it,
  but the ``opa eval`` that derives ``data.pdp_index`` loads it (forged index entries);
- a symbolic link under a source root (or a source root that is one) is refused: ``opa
  build`` follows it, while the checks here, the content revision and the fast-path review
  digest walk the tree without following links, so what it points at would be bundled
  unchecked and uncounted;
- the merged document is validated (JSON Schema draft 2020-12, ``jsonschema``); each
  problem names the file and the JSON pointer inside it.

:func:`check_policy_data` is what ``pdpctl bundle build``, ``policy check``, ``ci``, ``policy
fuzz`` and the embedded ``serve`` run before building; :func:`document_problems` is what a
running PDP runs on the data OPA activated (:mod:`pdp.dataguard`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .errors import BundleError, RequestError
from .jsonparse import dumps_pointer, loads
from .schema import field_errors, load_schema

#: data.<name> -> pdp/schemas/<schema>.schema.json for the documents the shipped library reads.
BUILTIN: Final[Mapping[str, str]] = {
    "inventory": "inventory",
    "sessions": "sessions",
    "classification": "classification",
    "delegation": "delegation",
    "authzen": "authzen-data",
}
#: Top-level documents the build derives itself (pdp.bundle): never from the sources.
RESERVED: Final = frozenset({"pdp_index", "system"})
#: Where a policy directory keeps the schemas of its own data documents.
SCHEMA_DIR: Final = "schemas"
#: File suffixes OPA loads as data.
DATA_SUFFIXES: Final = frozenset({".json", ".yaml", ".yml"})
#: Files ``opa eval --data <root>`` loads as a bundle but ``opa build`` skips: the index the
#: build derives with ``opa eval`` (pdp.bundle.derived_data) would read modules and data the
#: bundle does not carry, unchecked and outside the content revision.
ARCHIVE_SUFFIX: Final = ".tar.gz"
#: Most problems reported for one build.
MAX_PROBLEMS: Final = 50


class DataSchemaError(BundleError):
    """A data document of the bundle does not match its schema (or cannot be read)."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        lines = [*shown, *([f"... and {more} more"] if more > 0 else [])]
        super().__init__("\n".join(lines))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class DataFile:
    """One data file of the sources and where OPA merges it."""

    path: Path
    #: The path under data (folder names relative to the source root).
    at: tuple[str, ...]


def data_files(roots: Iterable[Path]) -> list[DataFile]:
    """Every file under ``roots`` that ``opa build`` loads as data, in path order."""
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.suffix in DATA_SUFFIXES:
                found.append(DataFile(path, path.parent.relative_to(root).parts))
    return found


def check_policy_data(policies_dir: Path, roots: Iterable[Path]) -> None:
    """Raise :class:`DataSchemaError` listing every problem of the data under ``roots``
    (see the module docstring); return when there is none."""
    problems = policy_data_problems(policies_dir, roots)
    if problems:
        raise DataSchemaError(problems)


def policy_data_problems(policies_dir: Path, roots: Iterable[Path]) -> list[str]:
    """One line per problem, ``<file>: <JSON pointer>: <message>``; empty when the data of
    the policy directory may be bundled."""
    problems: list[str] = []
    # data.<name> -> (merged document, [(file, path of the file's value inside it)])
    documents: dict[str, Any] = {}
    sources: dict[str, list[tuple[Path, tuple[str, ...], Any]]] = {}
    roots = list(roots)
    for root in roots:
        for link in _symlinks(root):
            problems.append(
                f"{_shown(link, policies_dir)}: /: a symbolic link may not be inside a source "
                "root (opa build follows it; these checks, the revision and the fast-path "
                "review do not)"
            )
        for archive in sorted(p for p in root.rglob("*") if p.name.endswith(ARCHIVE_SUFFIX)):
            problems.append(
                f"{_shown(archive, policies_dir)}: /: a bundle archive may not be inside a source "
                "root (opa eval would load it when the build derives data.pdp_index; opa build "
                "would not ship it)"
            )
    for file in data_files(roots):
        shown = _shown(file.path, policies_dir)
        if file.path.suffix != ".json":
            problems.append(
                f"{shown}: /: data documents must be JSON (YAML has no one strict reading)"
            )
            continue
        try:
            value = loads(file.path.read_bytes())
        except RequestError as exc:
            where = exc.fields[0].path if exc.fields else "/"
            problems.append(f"{shown}: {where}: {exc.fields[0].message if exc.fields else exc}")
            continue
        except OSError as exc:
            problems.append(f"{shown}: /: cannot be read ({exc.strerror})")
            continue
        for name, rest, part in _split(file.at, value):
            if part is _NOT_AN_OBJECT:
                problems.append(f"{shown}: /: a data file at the root must be a JSON object")
                continue
            if name in RESERVED:
                problems.append(
                    f"{shown}: /: data.{name} is derived by the bundle build; a policy "
                    "directory may not define it"
                )
                continue
            conflict = _merge(documents, [name, *rest], copy.deepcopy(part))
            if conflict is not None:
                others = ", ".join(_shown(p, policies_dir) for p, _, _ in sources.get(name, []))
                problems.append(
                    f"{shown}: {dumps_pointer([*rest, *conflict])}: data.{name} already has "
                    f"this member from {others or 'another file'} (OPA refuses such a merge)"
                )
                continue
            sources.setdefault(name, []).append((file.path, rest, part))
    for name in sorted(documents):
        schema, where = schema_for(name, policies_dir)
        if schema is None:
            files = ", ".join(_shown(p, policies_dir) for p, _, _ in sources[name])
            problems.append(
                f"{files}: /: data.{name} has no schema: add {SCHEMA_DIR}/{name}.schema.json "
                "to the policy directory (docs/policy-authoring.md, 'Data documents')"
            )
            continue
        for path, message in _violations(schema, where, documents[name]):
            shown, inside = _locate(path, sources[name], policies_dir, name)
            problems.append(f"{shown}: {dumps_pointer(inside)}: {message}")
    return problems


def _symlinks(root: Path) -> list[Path]:
    """Every symbolic link at or under ``root`` (files and directories; links not followed)."""
    if root.is_symlink():
        return [root]
    found: list[Path] = []
    for top, dirs, files in os.walk(root, followlinks=False):
        found += [Path(top) / name for name in (*dirs, *files) if (Path(top) / name).is_symlink()]
    return sorted(found)


def document_problems(documents: Mapping[str, Any], policies_dir: Path | None = None) -> list[str]:
    """``data.<name>: <JSON pointer>: <message>`` for every document of ``documents``
    (name -> value, as OPA holds them) that does not match its schema or has none."""
    problems = []
    for name in sorted(documents):
        schema, where = schema_for(name, policies_dir)
        if schema is None:
            problems.append(f"data.{name}: /: has no schema")
            continue
        for path, message in _violations(schema, where, documents[name]):
            problems.append(f"data.{name}: {dumps_pointer(path)}: {message}")
    return problems


def schema_for(name: str, policies_dir: Path | None) -> tuple[dict[str, Any] | None, str]:
    """The schema of ``data.<name>`` and where it is (None, where it would be: none)."""
    path = None if policies_dir is None else policies_dir / SCHEMA_DIR / f"{name}.schema.json"
    if name in BUILTIN:
        if path is not None and path.exists():
            raise DataSchemaError(
                [
                    f"{path}: /: data.{name} is read by the shipped library or the PDP and "
                    f"has its schema in pdp/schemas/{BUILTIN[name]}.schema.json; a policy "
                    "directory may not replace it"
                ]
            )
        return load_schema(BUILTIN[name]), f"pdp/schemas/{BUILTIN[name]}.schema.json"
    if path is None:
        return None, f"{SCHEMA_DIR}/{name}.schema.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, str(path)
    except (OSError, ValueError) as exc:
        raise DataSchemaError([f"{path}: /: not a readable JSON Schema ({exc})"]) from None
    return schema, str(path)


def _violations(schema: dict[str, Any], where: str, doc: Any) -> list[tuple[list[Any], str]]:
    """(path in the document, message) per violation, in path order."""
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except SchemaError as exc:
        raise DataSchemaError([f"{where}: /: not a valid JSON Schema: {exc.message}"]) from None
    out: list[tuple[list[Any], str]] = []
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for err in errors:
        for field in field_errors(err):
            item = (_unpointer(field.path), field.message)
            if item not in out:
                out.append(item)
    return out


@functools.lru_cache(maxsize=32)
def _validator(schema_text: str) -> Draft202012Validator:
    schema = json.loads(schema_text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _unpointer(pointer: str) -> list[Any]:
    if pointer in ("", "/"):
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


_NOT_AN_OBJECT: Final = object()


def _split(at: tuple[str, ...], value: Any) -> list[tuple[str, tuple[str, ...], Any]]:
    """(document name, path inside it, value) of one file: a file at the root contributes
    each of its members as a document."""
    if at:
        return [(at[0], at[1:], value)]
    if not isinstance(value, dict):
        return [("", (), _NOT_AN_OBJECT)]
    return [(name, (), member) for name, member in value.items()]


def _merge(tree: dict[str, Any], path: list[str], value: Any) -> list[str] | None:
    """Merge ``value`` into ``tree`` at ``path`` as OPA does (objects merge, anything else
    must be new); the path (below ``path[1:]``) of a conflict, else None."""
    node = tree
    for i, key in enumerate(path[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            return path[i + 1 :]
        node = child
    return _merge_into(node, path[-1], value)


def _merge_into(node: dict[str, Any], key: str, value: Any) -> list[str] | None:
    if key not in node:
        node[key] = value
        return None
    old = node[key]
    if not (isinstance(old, dict) and isinstance(value, dict)):
        return []
    for k, v in value.items():
        conflict = _merge_into(old, k, v)
        if conflict is not None:
            return [k, *conflict]
    return None


def _locate(
    path: list[Any], files: list[tuple[Path, tuple[str, ...], Any]], policies_dir: Path, name: str
) -> tuple[str, list[Any]]:
    """The file holding ``path`` of data.<name> and the path inside it: the file whose own
    value reaches deepest along the path (a member only the merge makes: the document)."""
    best: tuple[int, Path, tuple[str, ...]] | None = None
    for file, at, value in files:
        if [str(p) for p in path[: len(at)]] != list(at):
            continue
        depth = len(at) + _reach(value, path[len(at) :])
        if best is None or depth > best[0]:
            best = (depth, file, at)
    if best is None:
        return f"data.{name}", path
    return _shown(best[1], policies_dir), path[len(best[2]) :]


def _reach(value: Any, path: list[Any]) -> int:
    """How many steps of ``path`` exist in ``value``."""
    for i, key in enumerate(path):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            return i
    return len(path)


def _shown(path: Path, policies_dir: Path) -> str:
    """The file as the user named its directory (``policies/data/inventory/data.json``)."""
    del policies_dir  # the path already starts with it
    return str(path)
