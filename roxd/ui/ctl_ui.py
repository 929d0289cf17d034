"""`roxctl ui`: a one-time login link to roxd's web dashboard, asked for over the socket.

    roxctl ui            prints the link (valid 60 s, once); open it in a browser on this host
    roxctl ui --open     also opens it ($BROWSER, else the desktop's default browser)

The link's role is the caller's on the socket: admin for root and members of
api.admin_group, read-only for the socket's group. The link sets an HttpOnly session cookie
and leads to the dashboard; the ticket does not stay in the address bar. Like the rest of
roxctl this imports nothing of the engine: only the standard library and the API client.
"""

from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from typing import Any

from roxd.api.client import ApiClient
from roxd.text import printable


def add_ui_command(sub: Any) -> None:
    s = sub.add_parser("ui", help="a one-time login link to the web dashboard")
    s.add_argument("--open", action="store_true",
                   help="also open the link in a browser ($BROWSER or the default)")
    s.set_defaults(func=cmd_ui)


def cmd_ui(api: ApiClient, out: Any, args: argparse.Namespace) -> int:
    login = api.post("/v1/dashboard/login")
    url = printable(str(login["url"]))
    if getattr(out, "json", False):
        out.print(json.dumps(login, indent=2))
    else:
        out.print(url)
        role, base = printable(str(login["role"])), printable(str(login["base_url"]))
        ttl = int(login["expires_in_s"])
        print(f"roxctl: {role} login link for {base}/, valid {ttl} s and once; open it in "
              "a browser on this host", file=sys.stderr)
    if args.open and not webbrowser.open(url):
        print("roxctl: no browser found to open it (set $BROWSER)", file=sys.stderr)
        return 1
    return 0
