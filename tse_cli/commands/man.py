"""`tse man [COMMAND]...`: the man page of tse or of a subcommand, from the installed package itself.

The pages are generated from the live command tree (`tse_cli.manpages`), so they match the installed version
whatever way it was installed. Shown with `man -l` when `man` is installed (paged on a terminal, plain text in
a pipe), else as `--help` text; `--roff` prints the page source and `--write DIR` writes every page into DIR
(e.g. `tse man --write ~/.local/share/man/man1`, after which `man tse-extract` works). A wheel of tse also
installs the pages under `share/man/man1` of its environment, where `man` finds them next to `bin/tse`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import typer

from tse_cli.commands import fail


def man(
    ctx: typer.Context,
    command: list[str] = typer.Argument(None, help="A subcommand, e.g. extract, or models list (default: tse)."),
    roff: bool = typer.Option(False, "--roff", help="Print the page's roff source instead of showing it."),
    write: Path = typer.Option(None, "--write", metavar="DIR", help="Write every tse page into DIR and exit."),
) -> None:
    """Show the manual page of tse or of one of its commands (`tse man extract`)."""
    from tse_cli import console, manpages

    if write is not None:
        for path in manpages.write(write):
            console.note(f"wrote {path}")
        return
    path = ["tse", *(command or [])]
    name = f"{manpages.page_name(path)}.{manpages.SECTION}"
    pages = manpages.generate()
    if name not in pages:
        known = sorted(p.removesuffix(f".{manpages.SECTION}").replace("-", " ")[4:] for p in pages if p != "tse.1")
        raise fail(f"no manual page for {' '.join(path)!r}; commands: {', '.join(known)}", code=2)
    if roff:
        typer.echo(pages[name], nl=False)
        return
    if shutil.which("man") and _show(pages[name], name) == 0:
        return
    root = ctx.find_root()
    target = root.command
    for part in path[1:]:
        target = target.get_command(root, part)
    typer.echo(target.get_help(typer.Context(target, info_name=" ".join(path), parent=None)))


def _show(text: str, name: str) -> int:
    """Run `man -l` on the page (man pages it on a terminal and prints plain text in a pipe); its exit code."""
    with tempfile.TemporaryDirectory(prefix="tse-man-") as folder:
        page = Path(folder) / name
        page.write_text(text)
        try:
            return subprocess.run(["man", "-l", str(page)], check=False).returncode
        except OSError:
            return 1


def register(app: typer.Typer) -> None:
    """Add `tse man` to the app."""
    app.command("man")(man)
