"""How tse's command-line parameters present themselves: readable placeholders and shell completion of values.

`style(app)` (called once by `tse_cli.cli`) makes every command and group of the Typer app use `TseCommand` /
`TseGroup`, which on construction give each parameter

- a readable placeholder where its declaration has none: an option's long name in capitals, as argparse does
  (`--block-size BLOCK_SIZE`, `--class CLASS`), nothing for flags, and an argument's name in capitals
  (`INPUT...`, `ARCH`); the usage line reads `tse extract [OPTIONS] INPUT...`. Typer would show the Python
  types instead (`<bool>`, `<list[str]>`, `{INPUT...}...`); the man pages (`tse_cli.manpages`) read the same
  placeholders;
- completion of its values by name, so that an option means the same thing, and completes the same way, in
  every command: `--class` completes the 41 class names, `--model` the registry's model names, and an
  argument named `arch` the architecture names (`COMPLETERS`). `tse --install-completion` installs it for bash,
  zsh, fish or PowerShell; `tse --show-completion SHELL` prints the script;
- the hidden aliases of its names (`HIDDEN_ALIASES`): older spellings that keep working in scripts, which help,
  man pages and completion do not show (`--out` for `--output`, the one name of every command's output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def _classes() -> list[str]:
    from tse_cli.classes import FSD_CLASSES

    return list(FSD_CLASSES)


def _models() -> list[str]:
    from tse_cli.weights import WeightsError, load_registry

    try:
        return list(load_registry())
    except WeightsError:  # a broken extra registry: complete nothing rather than print a traceback
        return []


def _architectures() -> list[str]:
    from tse_cli.models import architectures

    return architectures()


# option string (or argument name) -> the values it completes
COMPLETERS: dict[str, Callable[[], list[str]]] = {
    "--class": _classes,
    "--model": _models,
    "arch": _architectures,
}


# hidden alias -> the option name it stands for
HIDDEN_ALIASES: dict[str, str] = {"--out": "--output"}


def candidates(values: list[str], incomplete: str) -> list[str]:
    """The `values` that start with `incomplete`, ignoring case (class names are case-insensitive)."""
    prefix = incomplete.lower()
    return [value for value in values if value.lower().startswith(prefix)]


def _completer(values: Callable[[], list[str]]) -> Callable[[Any, Any, str], list[str]]:
    def complete(ctx: Any, param: Any, incomplete: str) -> list[str]:
        return candidates(values(), incomplete)

    return complete


def placeholder(param: Any) -> str:
    """The readable placeholder of a parameter without an explicit one ("" for flags)."""
    if param.param_type_name == "argument":
        return param.name.upper()
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    long_names = [opt for opt in param.opts if opt.startswith("--")] or list(param.opts)
    return long_names[0].lstrip("-").replace("-", "_").upper()


class _Argument(TyperArgument):
    """An argument shown by its name alone in help (Typer would add its Python type, e.g. `<list[str]>`)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Option(TyperOption):
    """An option that also parses the hidden aliases of its names (`HIDDEN_ALIASES`)."""

    def add_to_parser(self, parser: Any, ctx: Any) -> None:
        shown = self.opts
        self.opts = [*shown, *(alias for alias, name in HIDDEN_ALIASES.items() if name in shown)]
        try:
            super().add_to_parser(parser, ctx)
        finally:
            self.opts = shown


def _style_params(params: list[Any]) -> None:
    for param in params:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            param.__class__ = _Option
        if param.metavar is None:
            param.metavar = placeholder(param)
        elif param.param_type_name == "argument":  # the dots of a variadic argument are added where it is shown
            param.metavar = param.metavar.removesuffix("...")
        names = [*getattr(param, "opts", []), param.name]
        completer = next((COMPLETERS[name] for name in names if name in COMPLETERS), None)
        if completer is not None and param._custom_shell_complete is None:
            param._custom_shell_complete = _completer(completer)


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    """`[OPTIONS]` and the arguments as `NAME`, `[NAME]`, `NAME...`."""
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = param.metavar + ("..." if param.nargs != 1 else "")
            pieces.append(name if param.required else f"[{name}]")
    return pieces


class _Styled:
    """What `TseCommand` and `TseGroup` add to Typer's classes (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _style_params(self.params)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # also the help option, and Typer's completion options added later
        _style_params(params)
        return params


class TseCommand(_Styled, TyperCommand):
    """A Typer command with readable placeholders and value completion."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)


class TseGroup(_Styled, TyperGroup):
    """A Typer group with readable placeholders and value completion."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]


def style(app: typer.Typer) -> None:
    """Make every command and group of `app` (and of its sub-apps) a `TseCommand` / `TseGroup`."""
    app.info.cls = TseGroup
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):  # a command with a class of its own keeps it
            command.cls = TseCommand
    for group in app.registered_groups:
        group.cls = TseGroup
        style(group.typer_instance)
