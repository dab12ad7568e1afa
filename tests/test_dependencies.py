"""Every import of the package is declared in pyproject.toml, and every declared dependency is used.

Checked over the installed distributions (``importlib.metadata``): the packaged code may import
the runtime dependencies and, inside functions only, the optional ``peers`` extra; tests and
benchmarks may also import the ``dev`` extra. The checker is shown to fail on a synthetic module.
"""

from __future__ import annotations

from pathlib import Path

from depcheck import check, declared

ROOT = Path(__file__).resolve().parents[1]
GROUPS = declared(ROOT / "pyproject.toml")
PACKAGE_FILES = sorted((ROOT / "invdesign").rglob("*.py"))
# declared for what they run, not for an import: the linter, the notebook kernel, the lock tool
TOOLS = {"ruff", "ipykernel", "uv"}


# the optional extras of the package beside peers: dft (gpaw, a source build kept out of the lock)
OPTIONAL = GROUPS["peers"] | GROUPS["dft"]


def test_package_imports_only_declared_distributions():
    undeclared, _ = check(PACKAGE_FILES, "invdesign", GROUPS["runtime"] | OPTIONAL)
    assert not undeclared, "\n".join(undeclared.values())


def test_module_level_imports_are_runtime_dependencies():
    """An optional extra may only be imported inside the function that needs it."""
    undeclared, _ = check(PACKAGE_FILES, "invdesign", GROUPS["runtime"], module_level_only=True)
    assert not undeclared, "\n".join(undeclared.values())


def test_tests_and_benchmarks_import_only_declared_distributions():
    files = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    allowed = GROUPS["runtime"] | OPTIONAL | GROUPS["dev"]
    undeclared, _ = check(files, "invdesign", allowed | {"invdesign"})
    local = {f.stem for f in files}  # the scripts' and tests' own modules (depcheck, conftest, fit_chgnet_delta, ...)
    undeclared = {m: r for m, r in undeclared.items() if m not in local}
    assert not undeclared, "\n".join(undeclared.values())


def test_every_declared_dependency_is_used():
    _, used_pkg = check(PACKAGE_FILES, "invdesign", GROUPS["runtime"] | OPTIONAL)
    files = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    _, used_dev = check(files, "invdesign", GROUPS["dev"])
    unused_pkg = (GROUPS["runtime"] | OPTIONAL) - used_pkg
    unused_dev = GROUPS["dev"] - used_dev - TOOLS
    assert not unused_pkg, f"declared but never imported by invdesign/: {sorted(unused_pkg)}"
    assert not unused_dev, f"dev extra declared but never imported by tests/ or benchmarks/: {sorted(unused_dev)}"


def test_checker_fails_on_an_undeclared_import(tmp_path):
    """A synthetic module importing numpy (installed) and a missing package, with numpy undeclared."""
    mod = tmp_path / "synthetic.py"
    mod.write_text("import os\nimport numpy as np\n\ndef f():\n    import surely_not_a_package_xyz\n")
    undeclared, used = check([mod], "synthetic", {"pandas"})
    assert set(undeclared) == {"numpy", "surely_not_a_package_xyz"}
    assert "does not declare" in undeclared["numpy"] and "not installed" in undeclared["surely_not_a_package_xyz"]
    assert used == set()
    # declared -> accepted; a function-level import does not count as module level
    undeclared, used = check([mod], "synthetic", {"numpy"}, module_level_only=True)
    assert undeclared == {} and used == {"numpy"}


def test_a_declared_optional_extra_need_not_be_installed(tmp_path):
    """An extra kept out of the lock (dft: gpaw) is declared but absent on a fresh machine: accepted, and counted
    as used; an undeclared missing import is still refused."""
    mod = tmp_path / "synthetic.py"
    mod.write_text("def f():\n    import surely_not_a_package_xyz\n")
    undeclared, used = check([mod], "synthetic", {"surely-not-a-package-xyz"})
    assert undeclared == {} and used == {"surely-not-a-package-xyz"}
    undeclared, _ = check([mod], "synthetic", set())
    assert "not installed and not declared" in undeclared["surely_not_a_package_xyz"]
