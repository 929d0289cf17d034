"""A small, strict RFC 5424 parser for the tests: header fields, SD elements, MSG."""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADER = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) ")


@dataclass
class Syslog5424:
    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, list[tuple[str, str]]]
    msg: str

    def param(self, sd_id: str, name: str) -> str:
        values = [v for k, v in self.sd[sd_id] if k == name]
        assert len(values) == 1, (sd_id, name, values)
        return values[0]

    def params(self, sd_id: str, name: str) -> list[str]:
        return [v for k, v in self.sd[sd_id] if k == name]


def parse_sd(text: str) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """Parse STRUCTURED-DATA at the start of text; returns (elements, rest)."""
    sd: dict[str, list[tuple[str, str]]] = {}
    i = 0
    if text.startswith("-"):
        return sd, text[1:]
    while i < len(text) and text[i] == "[":
        j = i + 1
        while text[j] not in " ]":
            j += 1
        sd_id = text[i + 1:j]
        params: list[tuple[str, str]] = []
        i = j
        while text[i] == " ":
            eq = text.index("=", i)
            name = text[i + 1:eq]
            assert text[eq + 1] == '"', text[i:]
            k = eq + 2
            value = []
            while text[k] != '"':
                if text[k] == "\\" and text[k + 1] in '"\\]':
                    value.append(text[k + 1])
                    k += 2
                else:
                    assert text[k] != "]", f"unescaped ] in {text[eq:k + 1]!r}"
                    value.append(text[k])
                    k += 1
            params.append((name, "".join(value)))
            i = k + 1
        assert text[i] == "]", text[i:]
        sd[sd_id] = params
        i += 1
    return sd, text[i:]


def parse_5424(raw: bytes | str) -> Syslog5424:
    text = raw.decode() if isinstance(raw, bytes) else raw
    m = HEADER.match(text)
    assert m, f"not RFC 5424: {text[:120]!r}"
    sd, rest = parse_sd(text[m.end():])
    msg = rest[1:] if rest.startswith(" ") else rest
    return Syslog5424(int(m["pri"]), m["ts"], m["host"], m["app"], m["procid"], m["msgid"], sd,
                      msg.removeprefix("\ufeff"))
