"""mkdocs hook (mkdocs.yml ``hooks:``): the CLI reference page is generated from the code at build time.

``docs/cli.md`` holds the marker ``<!-- cli-reference -->``; this hook replaces it with the ``--help`` of
every command and sub-command of ``invdesign`` (walked from the typer app, so a new command appears
without editing the page), each run through ``invdesign.cli.main`` exactly as the shell runs it.
"""

from __future__ import annotations

import contextlib
import io
import os

MARKER = "<!-- cli-reference -->"


def _commands(cmd, path: list[str]):
    """The path of ``cmd`` and of every sub-command, depth first, sorted by name."""
    yield path
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, [*path, name])


def help_text(path: list[str]) -> str:
    """What ``invdesign PATH --help`` prints (stdout), at a fixed width of 100 columns."""
    from invdesign import cli

    buf = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(buf):
            rc = cli.main([*path, "--help"])
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    if rc != 0:
        raise RuntimeError(f"invdesign {' '.join(path)} --help exited {rc}")
    return buf.getvalue().rstrip()


def cli_reference() -> str:
    """Markdown: one section per command with its ``--help`` in a code block."""
    import typer

    from invdesign import cli

    root = typer.main.get_command(cli.app)
    parts = []
    for path in _commands(root, []):
        title = " ".join(["invdesign", *path])
        level = "#" * min(2 + len(path), 4) if path else "##"
        parts.append(f"{level} `{title}`\n\n```text\n{help_text(path)}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs event
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
