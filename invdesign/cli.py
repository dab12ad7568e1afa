"""The ``invdesign`` command line (typer). Commands live in :mod:`invdesign.commands`.

Every user error (:class:`~invdesign.errors.InvdesignError`, bad option values, missing files)
ends as one line on stderr and exit status 2; nothing is half-written.
"""

from __future__ import annotations

import sys
import warnings

import typer

from invdesign.errors import InvdesignError

app = typer.Typer(
    name="invdesign",
    help="Inverse design of defect configurations in 2D crystals (MoS2 8x8 by default).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from invdesign.commands import campaign, data, design, label, model

    for mod in (data, model, design, campaign, label):
        mod.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    import click

    warnings.filterwarnings("ignore")
    try:
        app(args=argv, standalone_mode=False, prog_name="invdesign")
    except InvdesignError as exc:
        print(f"invdesign: error: {exc}", file=sys.stderr)
        return 2
    except click.exceptions.Abort:
        print("invdesign: aborted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        print(f"invdesign: error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code or 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        print("invdesign: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
