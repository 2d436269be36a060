"""The README as CI and a new user read it: the set-up and test commands .ci/run runs,
its length, and a Layout section that lists every module that exists and none that does not."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands():
    spec = importlib.util.spec_from_file_location(
        "readme_commands", ROOT / ".ci/readme_commands.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands_of(block: str) -> list[str]:
    """The command lines of a bash block (comments and blank lines left out)."""
    lines = (line.strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_runs_the_readme_commands_and_nothing_else():
    run = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert 'readme_commands.py README.md "Set up" "Test"' in run
    assert "set -euo pipefail" in run
    assert "pip install" not in run and "pytest" not in run  # all of that comes from the README


def test_the_set_up_is_two_commands_that_install_the_clip_vocabulary():
    blocks = readme_commands().commands(README, ["Set up"])
    lines = [line for block in blocks for line in commands_of(block)]
    assert len(lines) == 2, lines
    assert "pip install --no-deps open-clip-torch==3.3.0" in lines[1]
    assert 'pip install -e ".[dev,bench,web,ray,video]"' in lines[1]


def test_the_test_section_ends_with_the_test_command():
    blocks = readme_commands().commands(README, ["Test"])
    lines = [line for block in blocks for line in commands_of(block)]
    assert lines[-1] == "python -m pytest -q"
    assert "bash .ci/browser-deps" in lines  # the one optional command for the browser tests
    assert (ROOT / ".ci/browser-deps").is_file()


def test_what_ci_runs_is_valid_bash():
    script = subprocess.run(
        ["python3", ".ci/readme_commands.py", "README.md", "Set up", "Test"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "python -m pytest -q" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_a_missing_section_stops_ci():
    with pytest.raises(SystemExit, match="no '## Deploy' section"):
        readme_commands().commands(README, ["Deploy"])
    with pytest.raises(SystemExit, match="no ```bash block"):
        readme_commands().commands("## Set up\n\nnothing to run\n", ["Set up"])


def test_headings_inside_code_blocks_are_not_sections():
    text = "## Set up\n\n```bash\n# a comment, not a heading\necho one\n```\n\n## Test\n"
    assert readme_commands().commands(text, ["Set up"]) == ["# a comment, not a heading\necho one"]


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 250


# ------------------------------------------------------------------------- Layout
def layout_modules() -> set[str]:
    """The modules the README's Layout block names, as paths under src/laspa: a line at
    two spaces' indent names a module or, ending in '/', a package whose modules the
    line and its continuation lines (deeper indent) list."""
    block = README.split("## Layout", 1)[1].split("```", 2)[1]
    listed, package, inside = set(), "", False
    for line in block.splitlines():
        if line.startswith("src/laspa/"):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            break  # benchmarks/, training/, ...: past the package
        if not inside or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        first = line.split()[0]
        if indent == 2:
            package = first if first.endswith("/") else ""
        for name in re.findall(r"(?<![\w/.])(\w+\.py)\b", line):
            listed.add(package + name)
    return listed


def test_the_layout_lists_every_module_and_only_modules_that_exist():
    package = ROOT / "src/laspa"
    present = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    listed = layout_modules() - {"__init__.py"}
    assert not present - listed, f"README's Layout misses: {sorted(present - listed)}"
    assert not listed - present, (
        f"README's Layout lists what is not there: {sorted(listed - present)}"
    )
