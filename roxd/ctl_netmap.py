"""`roxctl netmap`: the container communication map (docs/netmap.md), as a table, JSON or
Graphviz DOT (`roxctl netmap --format dot | dot -Tsvg > map.svg`). Names come from containers,
so they are escaped for DOT's quoted strings (roxd/text.printable first: one line, \\xNN for
the rest). roxctl imports nothing of the engine: the rendering lives here."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from roxd.api.client import ApiClient
from roxd.text import printable

SHAPES = {"container": "box", "host": "house", "loopback": "circle", "external": "ellipse"}


def endpoint_label(ep: dict[str, Any]) -> str:
    if ep["kind"] == "container":
        return ep.get("name") or ep["id"][:12]
    return ep["id"]


def _quoted(text: str) -> str:
    return '"' + printable(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node_id(ep: dict[str, Any], source: dict[str, Any] | None = None) -> str:
    # loopback is each container's own: one node per source, not one shared by all
    if ep["kind"] == "loopback" and source is not None:
        return f"loopback:{source['id']}"
    return f"{ep['kind']}:{ep['id']}"


def to_dot(flows: Iterable[dict[str, Any]]) -> str:
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[str] = []
    for f in flows:
        src, dst = f["source"], f["destination"]
        sid, did = _node_id(src), _node_id(dst, src)
        for nid, ep in ((sid, src), (did, dst)):
            if nid not in nodes or (ep.get("name") and not nodes[nid].get("name")):
                nodes[nid] = ep  # a container's name may be known only on some flows
        proto = f.get("protocol") or "?"
        accepted = f.get("accepted", 0)
        label = f"{proto}/{f['port']} x{f['count'] or accepted}"
        if f["count"] == 0 and accepted:
            label += " (accepts)"  # seen only at the destination: a client roxd cannot trace
        style = ' style="dashed" color="red"' if f["succeeded"] == 0 and f["failed"] else ""
        edges.append(f"  {_quoted(sid)} -> {_quoted(did)} [label={_quoted(label)}{style}];")
    lines = ["digraph roxd_netmap {", "  rankdir=LR;", '  node [fontname="sans-serif"];',
             '  edge [fontname="sans-serif" fontsize=10];']
    for nid, ep in sorted(nodes.items()):
        lines.append(f"  {_quoted(nid)} [label={_quoted(endpoint_label(ep))} "
                     f"shape={SHAPES.get(ep['kind'], 'ellipse')}];")
    return "\n".join([*lines, *edges, "}"]) + "\n"


# direction seen from the container asked for (--container); "->" without one
DIRECTIONS = {"outbound": "out", "inbound": "in", "loopback": "self"}


def table_rows(flows: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(endpoint_label(f["source"]), DIRECTIONS.get(f.get("direction", ""), "->"),
             endpoint_label(f["destination"]),
             f["destination"]["kind"], f"{f.get('protocol') or '?'}/{f['port']}", f["count"],
             f["succeeded"], f["pending"], f["failed"], f.get("accepted", 0),
             "+".join(f.get("observed") or ()) or "-",
             f["last_seen"][:19].replace("T", " "))
            for f in flows]


# COUNT/OK/PENDING/FAILED: the source's connects; ACCEPTED: the destination's accepts;
# SEEN: which ends saw the edge (connect, accept or both)
TABLE_HEADERS = ("SOURCE", "DIR", "DESTINATION", "KIND", "PORT", "COUNT", "OK", "PENDING",
                 "FAILED", "ACCEPTED", "SEEN", "LAST SEEN")

FORMATS = ("table", "json", "dot")


def add_parser(sub: Any) -> None:
    s = sub.add_parser("netmap", help="who talks to whom: flows between containers, the host "
                                      "and external networks")
    s.add_argument("--since", help="flows last seen at or after: RFC 3339 or an age (15m, 2h)")
    s.add_argument("--container", help="flows from or to this container (name, id or prefix)")
    s.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    s.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default), json, or dot (Graphviz: | dot -Tsvg > map.svg)")
    s.set_defaults(func=cmd_netmap)


def cmd_netmap(api: ApiClient, out: Any, args: argparse.Namespace) -> int:
    answer = api.get("/v1/netmap", {"since": args.since, "container": args.container,
                                    "limit": args.limit})
    flows = answer["items"]
    fmt = args.format or ("json" if out.json else "table")
    if fmt == "json":
        out.dump(answer)
    elif fmt == "dot":
        out.print(to_dot(flows).rstrip("\n"))
    else:
        out.table(TABLE_HEADERS, table_rows(flows))
        inbound = (answer.get("stats") or {}).get("inbound") or {}
        if inbound and inbound.get("state") != "kernel":  # say it: no accept is not no traffic
            out.print(printable(f"inbound connections are not traced here ({inbound.get('state')}"
                                f": {inbound.get('reason') or 'no reason given'}): edges come "
                                "from connects only"))
    return 0
