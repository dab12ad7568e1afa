"""Declared vs imported distributions: a small dependency checker over ``importlib.metadata``.

Every third-party module that a file of a package imports (at any depth: top level, inside
functions, ``try`` blocks) must belong to a distribution that ``pyproject.toml`` declares, and every
declared distribution must be imported somewhere: an undeclared import works only while some other
package happens to pull it in (click through dask, scipy through scikit-learn), and an unused one
costs every user an install for nothing.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def normalize(name: str) -> str:
    """PEP 503 normal form of a distribution name (``Scikit_Learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    """The distribution name of a PEP 508 requirement string (``dask[distributed]>=2024.1`` -> ``dask``)."""
    return normalize(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def declared(pyproject: Path) -> dict[str, set[str]]:
    """Declared distributions per group: ``{"runtime": {...}, "<extra>": {...}}`` (normalized names)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    groups = {"runtime": {requirement_name(r) for r in project.get("dependencies", [])}}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[extra] = {requirement_name(r) for r in reqs}
    return groups


def _imports(tree: ast.AST) -> Iterable[tuple[str, bool]]:
    """(module name, at module level) for every absolute import in ``tree``; imports inside a
    function body count as not module level (they run only when that function does)."""

    def walk(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield a.name, not in_function
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module, not in_function
            yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    yield from walk(tree, False)


def imported_modules(files: Iterable[Path], own: str, module_level_only: bool = False) -> dict[str, set[str]]:
    """Top-level third-party module names imported by ``files`` -> the files importing each.

    Relative imports, the standard library and the package ``own`` itself are left out; with
    ``module_level_only`` only imports that run when the module is imported count.
    """
    found: dict[str, set[str]] = {}
    for path in files:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
        for name, module_level in _imports(tree):
            if module_level_only and not module_level:
                continue
            top = name.split(".")[0]
            if top == own or top in sys.stdlib_module_names or top == "__future__":
                continue
            found.setdefault(top, set()).add(str(path))
    return found


def distributions_of(modules: Iterable[str]) -> dict[str, set[str]]:
    """Module name -> the installed distributions that provide it (empty set: not installed at all)."""
    provided = metadata.packages_distributions()
    return {m: {normalize(d) for d in provided.get(m, [])} for m in modules}


def check(files: Iterable[Path], own: str, allowed: set[str],
          module_level_only: bool = False) -> tuple[dict[str, str], set[str]]:
    """Undeclared imports and used declared distributions.

    Returns:
        (undeclared, used): ``undeclared`` maps each offending module to a one-line reason; ``used``
        is the set of declared distributions that some file imports.
    """
    files = list(files)
    mods = imported_modules(files, own, module_level_only)
    undeclared: dict[str, str] = {}
    used: set[str] = set()
    for mod, dists in distributions_of(mods).items():
        where = ", ".join(sorted(Path(f).name for f in mods[mod]))
        if not dists:
            name = mod.split(".")[0].lower().replace("_", "-")
            if name in allowed:  # declared (an optional extra outside the lock, e.g. gpaw), not installed here
                used.add(name)
                continue
            undeclared[mod] = f"{mod} (imported in {where}) is not installed and not declared"
        elif not dists & allowed:
            undeclared[mod] = f"{mod} (imported in {where}) comes from {sorted(dists)}, which pyproject.toml does not declare"
        used |= dists & allowed
    return undeclared, used
