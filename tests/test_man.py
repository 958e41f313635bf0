"""Man pages: the committed man/ equals what the Typer app generates now, and every page renders cleanly."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tse_cli import manpages

ROOT = Path(__file__).resolve().parents[1]
MACROS = {"TH", "SH", "PP", "TP", "B", "nf", "fi"}
ESCAPES = re.compile(r"\\(e|-|&|f[BIR]|\[u[0-9A-F]{4}\])")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("man")
    manpages.write(folder)
    return folder


def test_committed_pages_are_up_to_date(generated: Path):
    committed = {p.name: p.read_text() for p in (ROOT / "man").glob("*.1")}
    fresh = {p.name: p.read_text() for p in generated.glob("*.1")}
    assert sorted(committed) == sorted(fresh), "man/ is stale: run `make man`"
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"man/ is stale ({', '.join(stale)}): run `make man`"


def test_every_command_has_a_page(generated: Path):
    import typer

    from tse_cli.cli import app

    names = {p.stem for p in generated.glob("*.1")}
    root = typer.main.get_command(app)
    assert "tse" in names
    for name, command in root.commands.items():
        assert f"tse-{name}" in names
        for sub in getattr(command, "commands", {}):
            assert f"tse-{name}-{sub}" in names
    page = (generated / "tse-convert-waveformer.1").read_text()
    assert "\\fB\\-\\-config\\fR \\fIFILE\\fR" in page and "[required]" in page


def structural_problems(text: str) -> list[str]:
    """What groff -ww would object to, checked without groff: unknown macros, stray escapes, bare non-ASCII."""
    problems = []
    if not text.startswith(".TH "):
        problems.append("does not start with .TH")
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION"):
        if f".SH {section}\n" not in text:
            problems.append(f"no {section} section")
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith((".", "'")) and line[1:].split(" ")[0] not in MACROS:
            problems.append(f"line {number}: unknown request {line.split(' ')[0]}")
        if not line.isascii():
            problems.append(f"line {number}: non-ASCII text")
        if "\\" in ESCAPES.sub("", line):
            problems.append(f"line {number}: unexpected escape")
    return problems


def test_pages_are_structurally_valid(generated: Path):
    for page in sorted(generated.glob("*.1")):
        assert not structural_problems(page.read_text()), page.name


def test_pages_render_without_groff_warnings(generated: Path):
    if shutil.which("groff") is None:
        pytest.skip("groff not installed: the pages were checked structurally only (apt-get install groff)")
    for page in sorted(generated.glob("*.1")):
        result = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr, f"{page.name}: {result.stderr}"


def test_escape_handles_roff_specials():
    assert manpages.escape(".start\n'quote") == "\\&.start\n\\&'quote"
    assert manpages.escape("a-b \\ c") == "a\\-b \\e c"
    assert manpages.escape("café") == "caf\\[u00E9]"
    assert not structural_problems(".TH X\n.SH NAME\n.SH SYNOPSIS\n.SH DESCRIPTION\n" + manpages.escape(".x - é"))
