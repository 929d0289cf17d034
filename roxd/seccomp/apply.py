"""Recreate a Docker container with a seccomp profile, and roll back on any failure.

The new container gets the old one's exact Config and HostConfig (name, command, entrypoint,
env, labels, mounts, network mode, ports, restart policy, capabilities, ...) as the engine
reports them, with `seccomp=<profile JSON>` in SecurityOpt (the Docker API takes the profile's
text, not a path). Order, so that the name never points at nothing:

    rename old -> <name>-roxd-old-<n>; stop old; create new under <name>; start new;
    check it keeps running for `settle_s`; remove old.

Any failure: remove the new container, rename the old one back, start it again if it was
running. The engine never pulls here: the low-level create does not.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from roxd.seccomp.errors import ApplyError, SeccompTargetError

log = logging.getLogger(__name__)

_DEFAULT_NETWORKS = ("default", "bridge", "host", "none")


@dataclass(frozen=True)
class ApplyResult:
    name: str
    old_id: str
    new_id: str
    running: bool


def container_spec(attrs: dict[str, Any], profile_json: str) -> tuple[dict[str, Any], list[
        tuple[str, dict[str, Any]]]]:
    """(create config, extra networks to connect) for a copy of the container with the profile."""
    config = copy.deepcopy(attrs["Config"])
    host = copy.deepcopy(attrs["HostConfig"])
    old_id = attrs["Id"]
    if config.get("Hostname") == old_id[:12]:
        config.pop("Hostname")  # the engine's default (the id): let the new id be the default
    opts = [o for o in host.get("SecurityOpt") or [] if not o.startswith(("seccomp=",
                                                                          "seccomp:"))]
    host["SecurityOpt"] = [*opts, f"seccomp={profile_json}"]
    config["HostConfig"] = host
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    mode = host.get("NetworkMode") or "default"
    extra: list[tuple[str, dict[str, Any]]] = []
    for net, ep in networks.items():
        if net in _DEFAULT_NETWORKS:
            continue
        endpoint = {"Aliases": [a for a in ep.get("Aliases") or [] if a != old_id[:12]],
                    "IPAMConfig": ep.get("IPAMConfig"), "Links": ep.get("Links")}
        if net == mode:
            config["NetworkingConfig"] = {"EndpointsConfig": {net: endpoint}}
        else:
            extra.append((net, endpoint))
    return config, extra


def apply_profile(client: Any, target: str, profile_json: str, *, settle_s: float = 1.0,
                  stop_timeout: int = 10) -> ApplyResult:
    """Recreate `target` (name or id) with the profile; ApplyError (after rollback) on failure."""
    import docker.errors

    api = client.api
    try:
        attrs = api.inspect_container(target)
    except docker.errors.NotFound:
        raise SeccompTargetError(target, "no such container") from None
    name = attrs["Name"].lstrip("/")
    old_id = attrs["Id"]
    was_running = bool(attrs["State"].get("Running"))
    config, extra_networks = container_spec(attrs, profile_json)
    parked = f"{name}-roxd-old-{uuid.uuid4().hex[:6]}"
    new_id: str | None = None
    renamed = stopped = False
    try:
        api.rename(old_id, parked)
        renamed = True
        if was_running:
            api.stop(old_id, timeout=stop_timeout)
            stopped = True
        new_id = api.create_container_from_config(config, name=name)["Id"]
        for net, endpoint in extra_networks:
            api.connect_container_to_network(new_id, net, aliases=endpoint.get("Aliases"),
                                             links=endpoint.get("Links"))
        api.start(new_id)
        _settle(api, new_id, settle_s, must_run=was_running)
    except Exception as exc:
        reason = _reason(exc)
        log.warning("seccomp apply to %s failed (%s): rolling back", name, reason)
        rolled_back = _rollback(api, old_id, name, new_id, renamed, stopped)
        raise ApplyError(name, reason, rolled_back) from None
    try:
        api.remove_container(old_id, force=True)
    except Exception as exc:  # the new one runs; the parked old one is only clutter
        log.warning("seccomp apply: could not remove the old container %s: %s", parked, exc)
    log.info("seccomp profile applied to %s (%s -> %s)", name, old_id[:12], new_id[:12])
    return ApplyResult(name, old_id, new_id, was_running)


def _settle(api: Any, cid: str, settle_s: float, must_run: bool) -> None:
    deadline = time.monotonic() + settle_s
    while True:
        state = api.inspect_container(cid)["State"]
        if state.get("Restarting") or (not state.get("Running") and (
                must_run or state.get("ExitCode", 0) != 0)):
            logs = api.logs(cid, tail=5).decode(errors="replace").strip()
            raise RuntimeError(f"the new container did not keep running (exit code "
                               f"{state.get('ExitCode')}, error {state.get('Error')!r}, "
                               f"last output {logs!r})")
        if time.monotonic() >= deadline:
            return
        time.sleep(0.1)


def _rollback(api: Any, old_id: str, name: str, new_id: str | None, renamed: bool,
              stopped: bool) -> bool:
    ok = True
    if new_id is not None:
        try:
            api.remove_container(new_id, force=True)
        except Exception as exc:
            log.error("rollback: cannot remove the new container %s: %s", new_id[:12], exc)
            ok = False
    if renamed:
        try:
            api.rename(old_id, name)
        except Exception as exc:
            log.error("rollback: cannot rename %s back to %s: %s", old_id[:12], name, exc)
            ok = False
    if stopped:
        try:
            api.start(old_id)
        except Exception as exc:
            log.error("rollback: cannot start %s again: %s", name, exc)
            ok = False
    return ok


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip() or type(exc).__name__
