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


# `id = "x"`, `name = 'x'`, `rule = "x"` anywhere on a line (inline tables have several)
_ASSIGNMENT = re.compile(r"""(?:^|[{,\s])(id|name|rule)\s*=\s*(?:"([^"\n]*)"|'([^'\n]*)')""")
_LEADING_KEY = re.compile(r"^\s*(?:\[\[?\s*)?([A-Za-z0-9_\-]+)")


class SourceMap:
    """Line lookups in one pass over the text: every lookup afterwards is a dict access, so a
    file with N bad records costs O(N + lines), not O(N x lines) (a 1 MiB body posted to
    /v1/rules/validate cost minutes of CPU when each error scanned every line)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self._starts: dict[str, list[int]] = {}
        self._assignments: dict[tuple[str, str], int] = {}  # (key, value) -> first line
        self._leading: dict[str, int] = {}  # a line's first key or header name -> first line
        for number, line in enumerate(self.lines, 1):
            header = _ARRAY_HEADER.match(line)
            if header:
                self._starts.setdefault(header.group(1), []).append(number)
            lead = _LEADING_KEY.match(line)
            if lead:
                self._leading.setdefault(lead.group(1), number)
            if "=" in line:
                for m in _ASSIGNMENT.finditer(line):
                    value = m.group(2) if m.group(2) is not None else m.group(3)
                    self._assignments.setdefault((m.group(1), value), number)

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
        """First line assigning `value` (as written, quoted) to one of `keys` (id, name,
        rule); None when not written literally (a string with escapes)."""
        found = [n for k in keys if (n := self._assignments.get((k, value))) is not None]
        return min(found) if found else None

    def top_level_key(self, key: str) -> int | None:
        return self._leading.get(key)
