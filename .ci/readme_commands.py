"""The README's shell commands, as CI runs them: every ```bash block of the named
"## " sections, in the README's order, as one script.

CI runs exactly what a new user is told to run, so a step the README lacks fails CI.
Usage: python3 .ci/readme_commands.py README.md "Set up" "Test"
(tests/docs/test_readme.py checks the README parses as this expects.)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")


def sections(text: str) -> dict[str, list[str]]:
    """Each level-2 section's lines, by title (a '# ' or '## ' heading ends a section;
    '### ' subsections stay inside it)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        heading = None if fenced else re.match(r"^(#{1,2}) (.+?)\s*$", line)
        if heading:
            current = found.setdefault(heading.group(2), []) if heading.group(1) == "##" else None
        elif current is not None:
            current.append(line)
    return found


def bash_blocks(lines: list[str]) -> list[str]:
    """The bodies of the ```bash blocks among ``lines``, in order."""
    blocks, body, language = [], None, None
    for line in lines:
        fence = FENCE.match(line.strip())
        if fence and body is None:
            body, language = [], fence.group(1)
        elif fence:
            if language == "bash":
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def commands(readme: str, titles: list[str]) -> list[str]:
    """The ```bash blocks of the sections ``titles`` of the README text, in that order;
    a missing section or one without a block is an error (CI must not run nothing)."""
    found = sections(readme)
    blocks = []
    for title in titles:
        if title not in found:
            raise SystemExit(f"README has no '## {title}' section")
        section_blocks = bash_blocks(found[title])
        if not section_blocks:
            raise SystemExit(f"README's '## {title}' section has no ```bash block")
        blocks.extend(section_blocks)
    return blocks


def main(argv: list[str]) -> None:
    readme, *titles = argv
    print("\n".join(commands(Path(readme).read_text(encoding="utf-8"), titles)))


if __name__ == "__main__":
    main(sys.argv[1:])
