"""The ``invdesign`` command line (typer). Commands live in :mod:`invdesign.commands`.

Every user error (:class:`~invdesign.errors.InvdesignError`, bad option values, missing files)
ends as one line on stderr and exit status 2; nothing is half-written. So does an ``OSError`` (disk full,
permission, a race) that a command did not turn into an :class:`InvdesignError` naming its path.
"""

from __future__ import annotations

import sys
import warnings

import typer

from invdesign.commands.common import PlainHelpGroup
from invdesign.errors import InvdesignError

app = typer.Typer(
    name="invdesign",
    help="Inverse design of defect configurations in 2D crystals (MoS2 8x8 by default).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain (click) help: rich's help renderer costs ~0.2 s of imports on every --help (typer.rich_utils pulls in
    # rich.markdown and rich.traceback) and reads square brackets in help texts as markup ("FILE.json[#LIMIT]" lost
    # its "[#LIMIT]"); benchmarks/results/toll.md
    rich_markup_mode=None,
    cls=PlainHelpGroup,
)


def _register() -> None:
    from invdesign.commands import campaign, data, design, label, model

    for mod in (data, model, design, campaign, label):
        mod.register(app)


_register()


def _version_line() -> str:
    """One line for bug reports: package, packaged model (content hash), torch, pymatgen and Python versions.

    Read from package metadata and the model file's bytes: nothing heavy is imported.
    """
    import hashlib
    import platform
    from importlib import metadata, resources

    from invdesign import __version__

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    def digest(name: str) -> str:
        f = resources.files("invdesign.resources") / name
        return hashlib.sha256(f.read_bytes()).hexdigest()[:12] if f.is_file() else "absent"

    return (f"invdesign {__version__} (model default sha256:{digest('default_model.pt')}, "
            f"hd correction sha256:{digest('hd_correction.npz')}) torch {dist('torch')} "
            f"pymatgen {dist('pymatgen')} python {platform.python_version()}")


def _version_callback(value: bool) -> None:
    if value:
        print(_version_line())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the package, model, torch and pymatgen versions and exit."),
) -> None:
    """Inverse design of defect configurations in 2D crystals (MoS2 8x8 by default)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; every user error (usage or input) ends as one line and exit status 2.

    Usage errors are typer's own exception classes (``typer.TyperException``; typer >= 0.29 vendors
    click, so click's classes would never match).
    """
    warnings.filterwarnings("ignore")
    try:
        return _main(argv)
    finally:
        from invdesign.outputs import release_locks

        release_locks()  # the outputs this command validated may be written by the next one


def _main(argv: list[str] | None) -> int:
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="invdesign")  # a typer.Exit's code comes back here
    except InvdesignError as exc:
        print(f"invdesign: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission, a race the command did not name itself: one line, the path
        where = exc.filename if exc.filename is not None else "?"
        print(f"invdesign: error: {_one_line(where)}: {_one_line(exc.strerror or exc)}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("invdesign: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:
        message = _one_line(exc.format_message())
        if message:  # empty where typer has already shown the help (no arguments at all)
            print(f"invdesign: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("invdesign: interrupted", file=sys.stderr)
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
