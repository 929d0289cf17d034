"""Best-effort line numbers for errors found after TOML parsing.

tomllib returns plain dicts without positions, so the loader finds lines in the file text: the
N-th `[[rule]]` header is the N-th rule, and a key's line is searched inside that block. Inline
tables (`rule = [{...}]`) have no headers; then we fall back to the line of `id = "..."`.
"""

from __future__ import annotations

import re

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_\-]+)\s*\]\]")
_ANY_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")
_SYNTAX_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def syntax_error_line(message: str, text: str) -> int | None:
    """The line tomllib names in its message ("... (at line 3, column 7)")."""
    found = _SYNTAX_POSITION.search(message)
    if found:
        return int(found.group(1))
    if "at end of document" in message:
        return max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
    return None


class SourceMap:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self._starts: dict[str, list[int]] = {}
        for number, line in enumerate(self.lines, 1):
            header = _ARRAY_HEADER.match(line)
            if header:
                self._starts.setdefault(header.group(1), []).append(number)

    def block(self, section: str, index: int) -> tuple[int, int] | None:
        """1-based first and last line of the `index`-th `[[section]]` block."""
        starts = self._starts.get(section, [])
        if index >= len(starts):
            return None
        first = starts[index]
        last = len(self.lines)
        for number in range(first + 1, len(self.lines) + 1):
            header = _ANY_HEADER.match(self.lines[number - 1])
            if header and not header.group(1).startswith(section + "."):
                last = number - 1
                break
        return first, last

    def line_of(
        self, section: str, index: int, key: str | None = None, ident: str | None = None
    ) -> int | None:
        """Line of `key` inside the block, else the block's header, else the `= "ident"` line."""
        block = self.block(section, index)
        if block is not None:
            first, last = block
            if key:
                key_line = re.compile(
                    rf"^\s*({re.escape(key)}\s*=|\[\[?\s*{re.escape(section)}\.{re.escape(key)}\b)"
                )
                for number in range(first, last + 1):
                    if key_line.match(self.lines[number - 1]):
                        return number
            return first
        if ident:
            return self.find_assignment(("id", "name", "rule"), ident)
        return None

    def find_assignment(self, keys: tuple[str, ...], value: str) -> int | None:
        pattern = re.compile(
            rf"""(^|[{{,\s])({"|".join(map(re.escape, keys))})\s*=\s*["']{re.escape(value)}["']"""
        )
        for number, line in enumerate(self.lines, 1):
            if pattern.search(line):
                return number
        return None

    def top_level_key(self, key: str) -> int | None:
        pattern = re.compile(rf"^\s*(\[\[?\s*)?{re.escape(key)}\b")
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                return number
        return None
