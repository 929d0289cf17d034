"""Untrusted text: how roxd holds bytes a process controls, and how it shows them.

A process chooses its executable's path, its argv, its comm and the files it opens: any
bytes but NUL. roxd holds them as `str` in one representation, made once where the bytes
come in (the sensor's records, /proc reads):

    from_bytes(b"/tmp/\\xff\\xfe/sh")  ->  "/tmp/\\\\xff\\\\xfe/sh"   (backslash, x, f, f ...)

- valid UTF-8 decodes as itself;
- each byte that is not part of valid UTF-8 becomes the four characters `\\xNN` (lower-case
  hex), so every string is valid Unicode: it encodes as UTF-8 and JSON without error;
- a literal backslash that would read as such an escape (a backslash followed by `x` and two
  hex digits) becomes `\\x5c`, so the text is unambiguous and `to_bytes()` gives back the
  exact bytes. Every other backslash stays as it is (`sed 's/a\\.b/'` reads as typed).

Control characters (newline, ESC, NUL, C1) stay in the text, so rules and JSON see exactly
what the process gave. Text sinks (the log line, journald, syslog, Slack, roxctl on a
terminal) pass the text through `printable()`, which writes each control character, each
Unicode line separator and bidirectional control as the `\\xNN` escapes of its UTF-8 bytes:
the shown text is one line, changes no terminal state, and still maps back to the exact
bytes with `to_bytes()`. A lone surrogate (Python's surrogateescape, e.g. from os.readlink
on a str path) is shown as the byte it stands for, so no sink can fail to encode it.

Standard library only: roxctl uses it too.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A backslash that would read as a \xNN escape.
_LITERAL_ESCAPE = re.compile(rb"\\(?=x[0-9a-fA-F]{2})")
_ESCAPE = re.compile(r"\\x([0-9a-f]{2})")

# What printable() escapes: C0 controls, DEL, C1 controls, lone surrogates, U+2028/U+2029
# (line and paragraph separators) and the bidirectional embedding, override and isolate
# controls (text that reads differently from what it is).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def from_bytes(raw: bytes) -> str:
    """Bytes from the kernel or /proc as roxd's text (see the module's docstring)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _LITERAL_ESCAPE.sub(rb"\\x5c", raw).decode("utf-8", "backslashreplace")
    if "\\x" in text:
        return _LITERAL_ESCAPE.sub(rb"\\x5c", raw).decode("utf-8")
    return text


def to_bytes(text: str) -> bytes:
    """The exact bytes behind roxd's text, or behind printable() of it."""
    raw = text.encode("utf-8", "surrogateescape")
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), raw)


def _escape_char(match: re.Match[str]) -> str:
    c = match.group()
    if "\udc80" <= c <= "\udcff":  # surrogateescape: the byte it stands for
        return f"\\x{ord(c) - 0xDC00:02x}"
    return "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass"))


def printable(text: str, limit: int | None = None) -> str:
    """One line of text that changes no terminal state and encodes as UTF-8: control
    characters, line separators, bidi controls and surrogates as \\xNN. With `limit`, cut to
    at most `limit` characters ending in "...", never inside an escape."""
    if _UNSAFE.search(text):
        text = _UNSAFE.sub(_escape_char, text)
    if limit is not None and len(text) > limit:
        text = clip(text, limit)
    return text


def clip(text: str, limit: int, ellipsis: str = "...") -> str:
    """At most `limit` characters, ending in `ellipsis` when cut; a \\xNN escape is kept
    whole or dropped whole."""
    if len(text) <= limit:
        return text
    cut = text[:max(limit - len(ellipsis), 0)]
    tail = cut.rfind("\\", max(len(cut) - 3, 0))
    if tail >= 0 and _ESCAPE.match(text, tail) and tail + 4 > len(cut):
        cut = cut[:tail]
    return cut + ellipsis


def without_surrogates(text: str) -> str:
    """Lone surrogates as \\xNN (a second line of defence for JSON: strict readers reject
    them); everything else untouched."""
    return _SURROGATE.sub(_escape_char, text) if _SURROGATE.search(text) else text


def json_safe(obj: Any) -> Any:
    """A copy of a JSON document (dicts, lists, strings, numbers) without lone surrogates."""
    if isinstance(obj, str):
        return without_surrogates(obj)
    if isinstance(obj, dict):
        return {without_surrogates(str(k)): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def json_dumps(obj: Any, **kw: Any) -> str:
    """json.dumps (ASCII), with any lone surrogate written as \\xNN text instead of an
    unpaired \\udcNN escape that strict JSON readers refuse. The check costs one substring
    search; only a document with a \\ud escape (a surrogate, or an astral character's pair)
    is walked again."""
    out = json.dumps(obj, **kw)
    if "\\ud" in out:
        out = json.dumps(json_safe(obj), **kw)
    return out
