"""The router: paths and methods from the OpenAPI document, handlers by operation id.

Dispatch order for every request: may the peer read at all (403) → which operation (404, 405)
→ may the peer run it (403) → parameters and body against the document's schemas (400) →
the handler. Handlers get typed arguments and return a JSON-able object, a Response or a
StreamResponse; they raise ApiError(status, reason) for anything the caller did wrong.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from roxd.api import schemas
from roxd.api.auth import Authorizer
from roxd.api.http import Request, Response, StreamResponse
from roxd.errors import ApiError

log = logging.getLogger(__name__)

# handler(request, params, body) -> JSON-able | Response | StreamResponse
Handler = Callable[[Request, dict[str, Any], Any], Any]


@dataclass(frozen=True)
class Route:
    operation: schemas.Operation
    pattern: re.Pattern[str]
    handler: Handler


def _compile(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(regex + r"\Z")


class Router:
    def __init__(self, handlers: Mapping[str, Handler], authorizer: Authorizer,
                 operations: list[schemas.Operation] | None = None) -> None:
        ops = operations if operations is not None else schemas.operations()
        missing = sorted({op.operation_id for op in ops} - set(handlers))
        unused = sorted(set(handlers) - {op.operation_id for op in ops})
        if missing or unused:
            raise RuntimeError(f"router and OpenAPI document disagree: no handler for "
                               f"{missing}, not in the document: {unused}")
        # literal paths before templated ones: /v1/alerts/stream before /v1/alerts/{id}
        ordered = sorted(ops, key=lambda op: (op.path.count("{"), op.path))
        self.routes = [Route(op, _compile(op.path), handlers[op.operation_id]) for op in ordered]
        self.authorizer = authorizer

    def __call__(self, request: Request) -> Response | StreamResponse:
        denial = self.authorizer.denial(request.peer, "read")
        if denial is not None:
            return _deny(request, denial)
        route, path_args = self._match(request)
        op = route.operation
        denial = self.authorizer.denial(request.peer, op.access)
        if denial is not None:
            return _deny(request, denial)
        params = self._params(op, request, path_args)
        body = request.json() if op.body_schema is not None else None
        if op.body_schema is None and request.body.strip():
            raise ApiError(400, f"{op.method} {op.path} takes no request body")
        if body is None and op.body_required:
            raise ApiError(400, "a JSON request body is required")
        if body is not None and op.body_schema is not None:
            schemas.check(op.body_schema, body)
        result = route.handler(request, params, body)
        if isinstance(result, Response | StreamResponse):
            return result
        return Response.json(result)

    def _match(self, request: Request) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in self.routes:
            m = route.pattern.match(request.path)
            if m is None:
                continue
            if route.operation.method == request.method:
                return route, m.groupdict()
            allowed.append(route.operation.method)
        if allowed:
            raise ApiError(405, f"{request.method} is not allowed on {request.path} "
                                f"(allowed: {', '.join(sorted(set(allowed)))})")
        raise ApiError(404, f"no such endpoint: {request.path} (see GET /v1/openapi.json)")

    @staticmethod
    def _params(op: schemas.Operation, request: Request,
                path_args: dict[str, str]) -> dict[str, Any]:
        known = {p.name for p in op.params if p.location == "query"}
        unknown = sorted(set(request.query) - known)
        if unknown:
            raise ApiError(400, f"unknown query parameter {unknown[0]!r} "
                                f"(known: {', '.join(sorted(known)) or 'none'})")
        out: dict[str, Any] = {}
        for param in op.params:
            if param.location == "path":
                try:
                    raw: str | None = unquote(path_args[param.name], errors="strict")
                except UnicodeDecodeError:
                    raise ApiError(400, f"path.{param.name} is not UTF-8") from None
            else:
                values = request.query.get(param.name)
                if values is not None and len(values) > 1:
                    raise ApiError(400, f"query.{param.name} given more than once")
                raw = values[0] if values else None
            if raw is None:
                if param.required:
                    raise ApiError(400, f"{param.location}.{param.name} is required")
                continue
            out[param.name] = schemas.coerce_param(param, raw)
        return out


def _deny(request: Request, reason: str) -> Response:
    log.warning("API denied %s %s to %s: %s", request.method, request.path,
                request.peer.describe(), reason)
    return Response.error(403, reason)
