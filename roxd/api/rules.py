"""Rule endpoints: list, show, validate a posted file, reload, enable/disable by id or tag."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from roxd.api.http import Request, Response
from roxd.api.port import DaemonPort
from roxd.api.timeparse import parse_time_ns
from roxd.errors import ApiError, RuleError
from roxd.model import rfc3339
from roxd.rules.ruleset import CompiledRule, RuleSet

log = logging.getLogger(__name__)

# A validation reports at most this many errors (and how many there were): the response,
# and the work of rendering it, stay bounded whatever a client posts.
MAX_REPORTED_ERRORS = 100
# Rule files are parsed by one request at a time (validate, reload); others wait this long,
# then get 429: a reader cannot run many megabyte parses at once against the daemon's CPU.
PARSE_WAIT_S = 5.0


def rule_tags(rule: CompiledRule) -> set[str]:
    """What a tag selects: the rule's phase and its MITRE technique ids (the rule format has
    no free tags of its own yet)."""
    return {t.lower() for t in (rule.phase.value, *rule.mitre)}


def rule_dict(rule: CompiledRule, *, host_kills: bool = False) -> dict[str, Any]:
    return {**rule.to_dict(), "description": rule.description,
            "effective": rule.action_note(host_kills=host_kills), "tags": []}


def error_dict(err: RuleError, rename: dict[str, str] | None = None) -> dict[str, Any]:
    file = err.file
    for tmp, name in (rename or {}).items():
        file = file.replace(tmp, name)
    return {"file": file, "line": err.line, "rule_id": err.rule_id, "message": err.message}


class RuleEndpoints:
    def __init__(self, daemon: DaemonPort) -> None:
        self.daemon = daemon
        self._parsing = threading.BoundedSemaphore(1)

    def _parse_slot(self) -> threading.BoundedSemaphore:
        if not self._parsing.acquire(timeout=PARSE_WAIT_S):
            raise ApiError(429, "another rule validation or reload is running; try again")
        return self._parsing

    def _rules(self) -> RuleSet:
        rules = self.daemon.rules()
        if rules is None:
            raise ApiError(503, "no rules loaded yet")
        return rules

    def _host_kills(self) -> bool:
        return bool(self.daemon.policy().get("host_kills", False))

    def list(self, _req: Request, params: dict[str, Any], _body: Any) -> Any:
        rules = self._rules()
        selected = [
            r for r in rules.rules
            if ("phase" not in params or r.phase.value == params["phase"])
            and ("enabled" not in params or r.enabled == params["enabled"])
            and ("tag" not in params or params["tag"].lower() in rule_tags(r))
        ]
        return {"version": rules.version, "files": list(rules.files),
                "rules": [rule_dict(r, host_kills=self._host_kills()) for r in selected]}

    def top(self, _req: Request, params: dict[str, Any], _body: Any) -> Any:
        """Alerts per rule since a time, from noise control's per-minute counts."""
        since_ns = parse_time_ns(params.get("since", "1h"), "query.since")
        minute = 60 * 1_000_000_000
        since_ns -= since_ns % minute  # the counts are per minute
        rows = list(self.daemon.rule_counts(since_ns))[: params.get("limit", 20)]
        return {"since": rfc3339(since_ns),
                "rules": [{"rule": r["rule"], "raised": r["raised"], "emitted": r["emitted"],
                           "folded": r["folded"], "throttled": r["throttled"],
                           "last_minute": rfc3339(r["last_minute_ns"])} for r in rows]}

    def get(self, _req: Request, params: dict[str, Any], _body: Any) -> Any:
        rule = self._rules().get(params["id"])
        if rule is None:
            raise ApiError(404, f"no rule {params['id']!r}")
        return rule_dict(rule, host_kills=self._host_kills())

    def validate(self, _req: Request, _params: dict[str, Any], body: dict[str, Any]) -> Any:
        """One file (`content`, `name`) or several (`files`: validated together, in order, so
        one may use the lists and macros of another, as a directory of rules files is).
        A posted file whose `path` is one of the loaded rule files takes that file's place
        (an edited /etc/roxd/rules.d/x.toml is checked as the reload would see it, not as a
        second copy of every rule in it)."""
        from roxd.rules.loader import rule_files, validate_paths

        posted = list(body.get("files") or [])
        if "content" in body:
            posted.insert(0, {"content": body["content"], "name": body.get("name")})
        if not posted:
            raise ApiError(422, "give `content` (one rules file) or `files` (several)")
        slot = self._parse_slot()
        try:
            with tempfile.TemporaryDirectory(prefix="roxd-validate-") as tmp:
                rename: dict[str, str] = {}
                paths: list[Path] = []
                replaces: dict[str, Path] = {}  # a loaded file's real path -> the posted copy
                for i, f in enumerate(posted):
                    name = f.get("name") or "posted.toml"
                    # one directory per file: two files may share a name (two directories)
                    path = Path(tmp) / str(i) / (name if name.endswith(".toml")
                                                 else name + ".toml")
                    path.parent.mkdir()
                    path.write_text(f["content"])
                    rename[str(path)] = name
                    if f.get("path"):
                        replaces[os.path.realpath(f["path"])] = path
                    else:
                        paths.append(path)
                if not body.get("standalone"):
                    loaded = rule_files(self.daemon.rule_paths(), [])
                    in_place = [replaces.pop(os.path.realpath(p), p) for p in loaded]
                    paths = [*in_place, *paths]
                paths += replaces.values()  # posted with a path that is not loaded: added
                errors = validate_paths(paths)
        finally:
            slot.release()
        shown = errors[:MAX_REPORTED_ERRORS]
        return {"valid": not errors, "errors": [error_dict(e, rename) for e in shown],
                "error_count": len(errors), "errors_truncated": len(errors) > len(shown)}

    def reload(self, _req: Request, _params: dict[str, Any], _body: Any) -> Any:
        from roxd.rules.loader import validate_paths

        previous = self._rules().version
        slot = self._parse_slot()
        try:
            errors = validate_paths(self.daemon.rule_paths())
        finally:
            slot.release()
        ok = not errors and self.daemon.call_in_loop(self.daemon.reload_rules)
        rules = self._rules()
        result = {"reloaded": bool(ok), "version": rules.version, "previous_version": previous,
                  "rules": len(rules.rules),
                  "errors": [error_dict(e) for e in errors[:MAX_REPORTED_ERRORS]]}
        if not ok:
            if not errors:
                result["errors"] = [{"file": "", "line": None, "rule_id": None,
                                     "message": "reload failed (see roxd's log)"}]
            return Response.json(result, 422)
        return result

    def toggle(self, enabled: bool) -> Any:
        def handler(req: Request, _params: dict[str, Any], body: dict[str, Any]) -> Any:
            rules = self._rules()
            ids = list(dict.fromkeys(body.get("ids", [])))
            tags = [t.lower() for t in body.get("tags", [])]
            if not ids and not tags:
                raise ApiError(400, "give at least one rule id or tag")
            unknown = [i for i in ids if rules.get(i) is None]
            tag_hits = {t: [r.id for r in rules.rules if t in rule_tags(r)] for t in tags}
            unknown += [f"tag:{t}" for t, hits in tag_hits.items() if not hits]
            if unknown:
                raise ApiError(404, f"no rule matches {', '.join(unknown[:10])}")
            matched = list(dict.fromkeys([*ids, *(i for h in tag_hits.values() for i in h)]))
            changed = [i for i in matched if rules.get(i).enabled != enabled]
            new_rules = self.daemon.call_in_loop(
                lambda: self.daemon.set_rules_enabled(matched, enabled))
            log.warning("API: %s %d rules for %s: %s", "enabled" if enabled else "disabled",
                        len(changed), req.peer.describe(), ", ".join(changed[:20]))
            return {"enabled": enabled, "matched": matched, "changed": changed,
                    "version": new_rules.version}

        return handler
