"""Man pages for `tse` and every subcommand, generated from the Typer app so they cannot drift from it.

`python -m tse_cli.manpages DIR` (`make man`) walks the command tree of `typer.main.get_command(app)` (Typer
vendors its own click, so commands and parameters are read by duck typing) and writes one roff page per
command: `tse.1`, `tse-extract.1`, `tse-models-list.1`, ... Stale `tse*.1` pages in DIR are removed.
The output is deterministic (no dates), so a test can compare it with the committed pages.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

SECTION = "1"

# The variables tse reads, for the ENVIRONMENT section of tse(1).
ENVIRONMENT = (
    ("HF_HOME, HF_HUB_CACHE", "Where huggingface_hub keeps downloaded weights (default ~/.cache/huggingface)."),
    ("HF_HUB_OFFLINE", "When true, never touch the network: weights must already be in the cache."),
    ("HF_ENDPOINT", "The Hub address (default https://huggingface.co), e.g. a mirror."),
    ("TSE_CACHE", "tse's own cache of URL downloads and converted checkpoints (default $HF_HOME/tse)."),
    ("TSE_REGISTRY", "Extra weights.toml files, separated by colons; their entries override the packaged ones."),
    (
        "TSE_SCAN_BACKEND",
        "Force the selective-scan backend of Mamba layers: reference (pure PyTorch), naive (the plain loop), "
        "cuda (mamba_ssm's kernel) or triton (tse's Triton kernels). Default: cuda, else triton, on CUDA "
        "tensors; cpu (tse's CPU kernel) for CPU inference where it builds; reference otherwise.",
    ),
    (
        "TSE_CPU_KERNELS",
        "0 (or off): never build or use tse's CPU kernels (a C file compiled with the C compiler, $CC, on first "
        "CPU inference); PyTorch's operations run instead, with the same output. tse --version says which.",
    ),
    (
        "TSE_KERNEL_CACHE",
        "Where the built CPU kernels are kept (default $XDG_CACHE_HOME/tse/kernels, else ~/.cache/tse/kernels).",
    ),
    (
        "TSE_PROGRESS_INTERVAL",
        "Seconds between plain progress lines when stderr is not a terminal (a log file or a pipe); default 5.",
    ),
    (
        "OMP_WAIT_POLICY",
        "tse sets PASSIVE unless already set: waiting OpenMP threads sleep instead of spinning, which keeps CPU "
        "extraction fast on busy machines.",
    ),
)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LIST_TYPE = re.compile(r"^list\[(.*)\]$")


# ---- roff text ----


def escape(text: str) -> str:
    """Escape plain text for roff: backslashes, hyphens (as minus), leading control characters, non-ASCII."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(ch if ord(ch) < 128 else f"\\[u{ord(ch):04X}]" for ch in text)
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def plain(text: str | None) -> str:
    """Help text without rich markup (the app renders help with rich markup, so tags are not literal)."""
    if not text:
        return ""
    from rich.errors import MarkupError
    from rich.text import Text

    try:
        return Text.from_markup(text).plain
    except MarkupError:
        return text


def paragraphs(text: str | None) -> list[str]:
    """Help text split into roff paragraphs; click's `\\b` marks a paragraph to keep unwrapped."""
    out = []
    for block in _PARAGRAPH_BREAK.split(plain(text).strip()):
        if block.startswith("\b"):
            out.append(".nf\n" + escape(block[1:].strip("\n")) + "\n.fi")
        elif block.strip():
            out.append(escape(" ".join(line.strip() for line in block.splitlines())))
    return out


def summary(command: Any) -> str:
    """The one-line summary of a command (its short help, else the first sentence of its help)."""
    text = plain(command.short_help or command.help or "").strip()
    first = _PARAGRAPH_BREAK.split(text)[0].replace("\n", " ")
    return first.split(". ")[0].rstrip(".")


# ---- parameters ----


def is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"


def metavar(param: Any, ctx: Any) -> str:
    """The placeholder shown for a parameter's value: its metavar, an argument's name, or the option's type."""
    if param.metavar:
        return param.metavar
    if is_argument(param):
        return param.name.upper()
    shown = (param.display_type_rich(ctx=ctx) or "value").strip("<>")
    shown = _LIST_TYPE.sub(r"\1", shown)
    return shown.upper() if shown.isidentifier() else shown


def option_term(option: Any, ctx: Any) -> str:
    """The roff term for an option: its names in bold and its value placeholder in italics."""
    # short names first (click may hand them over in set order, e.g. help_option_names)
    ordered = sorted(option.opts, key=lambda o: (o.startswith("--"), o)) + list(option.secondary_opts)
    names = ", ".join(f"\\fB{escape(o)}\\fR" for o in ordered)
    if option.is_flag or option.count:
        return names
    return f"{names} \\fI{escape(metavar(option, ctx))}\\fR"


def option_help(option: Any) -> str:
    """An option's help with its default (when worth showing) or `required`."""
    text = plain(getattr(option, "help", None) or "").strip()
    extras = []
    if option.required:
        extras.append("required")
    elif option.show_default is not False and option.default not in (None, False, (), []) and not option.is_flag:
        default = option.default
        shown = ", ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        extras.append(f"default: {shown}")
    if option.multiple:
        extras.append("may be repeated")
    suffix = f" [{'; '.join(extras)}]" if extras else ""
    return escape(" ".join(text.split()) + suffix)


def argument_term(argument: Any, ctx: Any) -> str:
    dots = "..." if argument.nargs == -1 else ""
    return f"\\fI{escape(metavar(argument, ctx))}\\fR{dots}"


# ---- pages ----


def page_name(path: list[str]) -> str:
    """`["tse", "models", "list"]` -> `tse-models-list`."""
    return "-".join(path)


def synopsis(path: list[str], command: Any, ctx: Any) -> str:
    parts = [f".B {escape(' '.join(path))}"]
    line = ["[\\fIOPTIONS\\fR]"]
    for param in command.params:
        if is_argument(param):
            term = argument_term(param, ctx)
            line.append(term if param.required else f"[{term}]")
    if hasattr(command, "commands"):
        line.append("\\fICOMMAND\\fR [\\fIARGS\\fR]...")
    return "\n".join([*parts, " ".join(line)])


def render(path: list[str], command: Any, ctx: Any, version: str) -> str:
    """The roff source of the man page for `command` at `path` (e.g. ["tse", "models", "list"])."""
    name = page_name(path)
    lines = [
        f'.TH "{escape(name.upper())}" "{SECTION}" "" "tse {escape(version)}" "tse manual"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(summary(command))}",
        ".SH SYNOPSIS",
        synopsis(path, command, ctx),
        ".SH DESCRIPTION",
    ]
    body = paragraphs(command.help) or [escape(summary(command))]
    lines += [body[0], *(item for p in body[1:] for item in (".PP", p))]
    arguments = [p for p in command.params if is_argument(p) and getattr(p, "help", None)]
    if arguments:
        lines.append(".SH ARGUMENTS")
        for argument in arguments:
            lines += [".TP", argument_term(argument, ctx), escape(" ".join(plain(argument.help).split()))]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    options += [p for p in [command.get_help_option(ctx)] if p is not None]
    lines.append(".SH OPTIONS")
    for option in options:
        lines += [".TP", option_term(option, ctx), option_help(option)]
    children = visible_children(command)
    if children:
        lines.append(".SH COMMANDS")
        for child_name, child in children:
            child_page = page_name([*path, child_name])
            lines += [
                ".TP",
                f"\\fB{escape(child_name)}\\fR",
                f"{escape(summary(child))}; see \\fB{escape(child_page)}\\fR(1).",
            ]
    if len(path) == 1:
        lines.append(".SH ENVIRONMENT")
        for variable, meaning in ENVIRONMENT:
            lines += [".TP", f"\\fB{escape(variable)}\\fR", escape(meaning)]
    related = [page_name(path[:i]) for i in range(1, len(path))]
    related += [page_name([*path, child_name]) for child_name, _ in children]
    if related:
        lines.append(".SH SEE ALSO")
        lines.append(",\n".join(f"\\fB{escape(r)}\\fR({SECTION})" for r in related))
    return "\n".join(lines) + "\n"


def visible_children(command: Any) -> list[tuple[str, Any]]:
    """A group's subcommands in name order, hidden ones left out."""
    if not hasattr(command, "commands"):
        return []
    return [(n, c) for n, c in sorted(command.commands.items()) if not c.hidden]


def generate() -> dict[str, str]:
    """File name -> roff source for `tse` and every subcommand, from the live Typer app."""
    import typer

    from tse_cli import __version__
    from tse_cli.cli import app

    pages: dict[str, str] = {}

    def walk(path: list[str], command: Any, parent: Any) -> None:
        ctx = command.context_class(command, info_name=path[-1], parent=parent, **command.context_settings)
        pages[f"{page_name(path)}.{SECTION}"] = render(path, command, ctx, __version__)
        for child_name, child in visible_children(command):
            walk([*path, child_name], child, ctx)

    walk(["tse"], typer.main.get_command(app), None)
    return pages


def write(directory: str | Path) -> list[Path]:
    """Write every page into `directory` (each atomically) and remove stale `tse*.1` pages; returns the pages."""
    from tse_cli.atomic import write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pages = generate()
    for stale in directory.glob(f"tse*.{SECTION}"):
        if stale.name not in pages:
            stale.unlink()
    written = []
    for filename, text in pages.items():
        target = directory / filename
        write_text(target, text)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    """`python -m tse_cli.manpages DIR`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tse_cli.manpages DIR")
    for path in write(args[0]):
        print(path)


if __name__ == "__main__":
    main()
