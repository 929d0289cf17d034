"""`roxctl fleet alerts|incidents|nodes`: the fleet as NATS JetStream holds it, without a
central server of roxd's own.

    roxctl fleet nodes     --server nats://nats.example.org:4222
    roxctl fleet alerts    --since 1h --node worker-3 --limit 50
    roxctl fleet incidents --since 24h --state open
    roxctl --json fleet alerts ...

Every roxd with an [[alerts.nats]] table publishes its alerts to `<prefix>.<node>.alerts`, its
incident changes to `<prefix>.<node>.incidents` (one stream, ROXD_ALERTS) and a heartbeat every
`heartbeat_s` into a key-value bucket (ROXD_NODES). This command reads them straight from
NATS (an ephemeral consumer, no acknowledgements, nothing changed on the server); it never
talks to a roxd. A node is `stale` when its last heartbeat is older than three intervals.

The server, credentials and TLS files come from the options, else from $ROXD_NATS_URL,
$ROXD_NATS_USER / $ROXD_NATS_PASSWORD, $ROXD_NATS_TOKEN. Exit codes: 0 ok, 1 error (no such
stream or bucket), 3 the server not reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from roxd.text import printable

EXIT_OK, EXIT_ERROR, EXIT_UNREACHABLE = 0, 1, 3
STALE_AFTER_INTERVALS = 3
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class FleetError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def duration(text: str) -> float:
    """"90s", "15m", "1h", "7d" -> seconds (argparse type)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 1h, 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


# ---------------------------------------------------------------------------- parser


def add_fleet_parser(sub: Any) -> None:
    """`roxctl fleet ...` on roxctl's subcommand parser."""
    s = sub.add_parser("fleet", help="the fleet as NATS JetStream holds it: alerts, incidents, "
                                     "nodes (reads NATS, not roxd's socket)")
    fsub = s.add_subparsers(dest="fleet_cmd", required=True, metavar="SUBCOMMAND")
    a = fsub.add_parser("alerts", help="alerts of every node, oldest first")
    a.add_argument("--since", type=duration, default=3600.0, metavar="DURATION",
                   help="how far back (90s, 15m, 1h, 7d; default 1h)")
    a.add_argument("--limit", type=int, default=100, metavar="N",
                   help="the N newest (100; 0 = all)")
    i = fsub.add_parser("incidents", help="incidents of every node (their latest state)")
    i.add_argument("--since", type=duration, default=86400.0, metavar="DURATION",
                   help="changes this far back (default 24h)")
    i.add_argument("--state", choices=("open", "closed"))
    i.add_argument("--limit", type=int, default=100, metavar="N",
                   help="the N most recent (100; 0 = all)")
    n = fsub.add_parser("nodes", help="every node's last heartbeat: version, alerts, queue")
    for p in (a, i, n):
        if p is not n:
            p.add_argument("--node", help="one node's name (its subject token)")
        _connection_args(p)
        p.set_defaults(func=cmd_fleet)


def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("NATS")
    g.add_argument("--server", action="append", metavar="URL",
                   help="nats:// or tls:// URL, repeatable (default $ROXD_NATS_URL or "
                        "nats://127.0.0.1:4222)")
    g.add_argument("--stream", default="ROXD_ALERTS", help="the stream (ROXD_ALERTS)")
    g.add_argument("--bucket", default="ROXD_NODES", help="the heartbeat bucket (ROXD_NODES)")
    g.add_argument("--subject-prefix", default="roxd", help="the subjects' prefix (roxd)")
    g.add_argument("--user", default=os.environ.get("ROXD_NATS_USER", ""))
    g.add_argument("--password", default=os.environ.get("ROXD_NATS_PASSWORD", ""),
                   help="(better: $ROXD_NATS_PASSWORD)")
    g.add_argument("--token", default=os.environ.get("ROXD_NATS_TOKEN", ""),
                   help="(better: $ROXD_NATS_TOKEN)")
    g.add_argument("--ca", default="", help="TLS: CA bundle for the server's certificate")
    g.add_argument("--cert", default="", help="TLS: client certificate (PEM)")
    g.add_argument("--key", default="", help="TLS: client private key (PEM)")
    g.add_argument("--server-name", default="", help="TLS: name to check in the certificate")
    g.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="connect and request timeout (5)")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="JSON output")


# ---------------------------------------------------------------------------- command


def cmd_fleet(_api: Any, out: Any, args: argparse.Namespace) -> int:
    try:
        import nats  # noqa: F401  (optional: only `roxctl fleet` needs it)
    except ImportError:
        print("roxctl: `roxctl fleet` needs the NATS client (Python package nats-py): "
              "pip install nats-py", file=sys.stderr)
        return EXIT_ERROR
    as_json = bool(getattr(args, "json", False)) or out.json
    try:
        if args.fleet_cmd == "nodes":
            nodes = asyncio.run(read_nodes(args))
            return show_nodes(out, nodes, as_json)
        if args.fleet_cmd == "alerts":
            # 0 = every alert in the window, as for incidents (deque(maxlen=0) kept none)
            records = asyncio.run(read_subject(args, "alerts",
                                               keep=args.limit if args.limit > 0 else None))
            return show_alerts(out, records, as_json)
        records = asyncio.run(read_subject(args, "incidents", keep=None))
        return show_incidents(out, latest_incidents(records, args.state, args.limit), as_json)
    except FleetError as exc:
        print(f"roxctl: {exc}", file=sys.stderr)
        return exc.code


# ---------------------------------------------------------------------------- NATS


async def _connect(args: argparse.Namespace) -> Any:
    import nats

    servers = args.server or [os.environ.get("ROXD_NATS_URL", "nats://127.0.0.1:4222")]
    last_error: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        last_error.append(exc)

    opts: dict[str, Any] = {"servers": servers, "allow_reconnect": False,
                            "connect_timeout": args.timeout, "max_reconnect_attempts": 1,
                            "reconnect_time_wait": 0.1, "error_cb": on_error,
                            "name": "roxctl fleet"}
    if args.user:
        opts.update(user=args.user, password=args.password)
    if args.token:
        opts["token"] = args.token
    if args.ca or args.cert or args.server_name or any(u.startswith("tls://")
                                                       for u in servers):
        ctx = ssl.create_default_context(cafile=args.ca or None)
        if args.cert:
            ctx.load_cert_chain(args.cert, args.key or None)
        opts["tls"] = ctx
        if args.server_name:
            opts["tls_hostname"] = args.server_name
    try:
        return await asyncio.wait_for(nats.connect(**opts),
                                      2 * len(servers) * (args.timeout + 0.2) + 1)
    except Exception as exc:
        cause = last_error[-1] if last_error else exc
        raise FleetError(f"cannot reach NATS at {', '.join(servers)}: {_describe(cause)}",
                         EXIT_UNREACHABLE) from exc


async def read_subject(args: argparse.Namespace, kind: str,
                       keep: int | None) -> list[dict[str, Any]]:
    """The records on <prefix>.<node or *>.<kind> published in the last `args.since` seconds,
    oldest first; only the `keep` newest when given."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    node = getattr(args, "node", None) or "*"
    subject = f"{args.subject_prefix}.{node}.{kind}"
    since = dt.datetime.fromtimestamp(time.time() - args.since, tz=dt.UTC)
    nc = await _connect(args)
    try:
        js = nc.jetstream(timeout=args.timeout)
        try:
            await js.stream_info(args.stream)
        except NotFoundError:
            raise FleetError(f"no stream {args.stream} on the server: no roxd publishes there "
                             "yet ([[alerts.nats]] in roxd.toml)") from None
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME,
                                opt_start_time=since, ack_policy=AckPolicy.NONE,
                                filter_subject=subject, inactive_threshold=30.0,
                                mem_storage=True)
        psub = await js.pull_subscribe(subject, durable=None, stream=args.stream,
                                       config=config)
        records: deque[dict[str, Any]] = deque(maxlen=keep)
        try:
            while True:
                try:
                    msgs = await psub.fetch(batch=500, timeout=min(args.timeout, 2.0))
                except TimeoutError:
                    break  # nothing (more) in the window
                pending = 0
                for m in msgs:
                    pending = m.metadata.num_pending
                    try:
                        record = json.loads(m.data)
                    except ValueError:
                        continue  # not roxd's: another publisher on the subject
                    record["_subject"] = m.subject
                    record["_seq"] = m.metadata.sequence.stream
                    records.append(record)
                if pending == 0:
                    break
        finally:
            await psub.unsubscribe()
        return list(records)
    finally:
        await nc.close()


async def read_nodes(args: argparse.Namespace) -> list[dict[str, Any]]:
    from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError

    nc = await _connect(args)
    try:
        js = nc.jetstream(timeout=args.timeout)
        try:
            kv = await js.key_value(args.bucket)
        except (BucketNotFoundError, NotFoundError):
            raise FleetError(f"no key-value bucket {args.bucket} on the server: no roxd sends "
                             "heartbeats there yet") from None
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        nodes = []
        now = time.time_ns()
        for key in sorted(keys):
            try:
                entry = await kv.get(key)
                beat = json.loads(entry.value or b"{}")
            except (NotFoundError, ValueError):
                continue  # deleted meanwhile, or not a heartbeat
            age = max(0.0, (now - int(beat.get("time_ns", 0))) / 1e9)
            interval = float(beat.get("interval_s", 10.0))
            beat.update(key=key, age_s=round(age, 1),
                        state="stale" if age > STALE_AFTER_INTERVALS * interval else "up")
            nodes.append(beat)
        return nodes
    finally:
        await nc.close()


def latest_incidents(changes: list[dict[str, Any]], state: str | None,
                     limit: int) -> list[dict[str, Any]]:
    """Each incident's latest change (stream order), filtered by state, most recent last."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for c in changes:
        inc = c.get("incident") or {}
        key = (_node_name(c), str(inc.get("id", "")))
        latest.pop(key, None)  # re-inserted: dict order = order of the latest change
        latest[key] = c
    rows = [c for c in latest.values()
            if state is None or (c.get("incident") or {}).get("state") == state]
    return rows[-limit:] if limit > 0 else rows


# ---------------------------------------------------------------------------- output


def show_alerts(out: Any, records: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        out.dump(records)
        return EXIT_OK
    rows = []
    for r in records:
        rule = r.get("rule") or {}
        c = r.get("container") or {}
        proc = r.get("process") or {}
        cmd = " ".join(proc.get("args") or []) or proc.get("exe") or ""
        actions = ",".join(f"{a.get('action')}:{a.get('outcome')}" for a in r.get("actions", []))
        rows.append([r.get("time", ""), _node_name(r), rule.get("severity"), rule.get("id"),
                     c.get("name") or (c.get("id") or "")[:12] or "host", _clip(cmd, 60),
                     actions or "-"])
    out.table(["TIME", "NODE", "SEVERITY", "RULE", "CONTAINER", "COMMAND", "ACTIONS"], rows)
    out.print(f"{len(records)} alerts from {len({_node_name(r) for r in records})} nodes")
    return EXIT_OK


def show_incidents(out: Any, changes: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        out.dump([{"node": _node_name(c), "change": c.get("change"), "time": c.get("time"),
                   "incident": c.get("incident")} for c in changes])
        return EXIT_OK
    rows = []
    for c in changes:
        inc = c.get("incident") or {}
        containers = ",".join(x.get("name") or (x.get("id") or "")[:12]
                              for x in inc.get("containers", []))
        rows.append([str(inc.get("id", ""))[:12], _node_name(c), inc.get("state"),
                     inc.get("severity"), ",".join(p["phase"] for p in inc.get("phases", [])),
                     inc.get("alerts"), containers or "-", c.get("change"),
                     inc.get("last_seen")])
    out.table(["INCIDENT", "NODE", "STATE", "SEVERITY", "PHASES", "ALERTS", "CONTAINERS",
               "LAST CHANGE", "LAST SEEN"], rows)
    return EXIT_OK


def show_nodes(out: Any, nodes: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        out.dump(nodes)
        return EXIT_OK
    paint: Callable[[str], str] = lambda v: out.paint(v, "31" if "stale" in v else "32")  # noqa: E731
    rows = []
    for n in nodes:
        ident = n.get("node") or {}
        alerts = n.get("alerts") or {}
        exporter = n.get("exporter") or {}
        problems = n.get("problems") or []
        rows.append([n.get("name") or n.get("key"), n.get("state"), ident.get("hostname"),
                     (ident.get("machine_id") or "")[:12] or "-", n.get("version"),
                     f"{n.get('age_s')}s ago", alerts.get("total", 0),
                     exporter.get("queued", 0), len(problems), n.get("started")])
    out.table(["NODE", "STATE", "HOSTNAME", "MACHINE ID", "VERSION", "LAST HEARTBEAT",
               "ALERTS", "QUEUED", "PROBLEMS", "STARTED"], rows, colors=[None, paint])
    up = sum(1 for n in nodes if n.get("state") == "up")
    out.print(f"{len(nodes)} nodes, {up} up, {len(nodes) - up} stale")
    for n in nodes:  # what each node's exporter reported in its last heartbeat
        for problem in n.get("problems") or []:
            out.print(f"{printable(str(n.get('name') or n.get('key')))}: "
                      f"{_clip(str(problem), 300)}")
    return EXIT_OK


def _node_name(record: dict[str, Any]) -> str:
    node = record.get("node") or {}
    return str(node.get("kubernetes_node") or node.get("hostname") or "?")


def _clip(text: str, limit: int) -> str:
    text = printable(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
