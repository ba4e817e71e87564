"""One OpenAPI for the public API, composed from the services' own documents under /api/v1, plus the gateway's
key management; the AsyncAPI of all events."""

from __future__ import annotations

import copy
from typing import Any

from techport_gateway.domain import upstream
from techport_gateway.upstream import Upstreams, UpstreamUnavailable

_OPERATIONS = ("get", "post", "put", "patch", "delete")
_NOT_PUBLIC = ("/healthz", "/readyz", "/metrics", "/admin/")


async def compose(own: dict[str, Any], upstreams: Upstreams) -> dict[str, Any]:
    document = copy.deepcopy(own)
    document["info"] = {
        "title": "Techport platform API",
        "version": "1.0.0",
        "description": "The public API, through the gateway. Authorization: Bearer <api key>.",
    }
    document.setdefault("components", {}).setdefault("schemas", {})
    document["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    document["security"] = [{"apiKey": []}]
    for name in upstreams:
        try:
            response = await upstreams.call(name, "GET", "/openapi.json", timeout_s=3)
        except UpstreamUnavailable:
            response = None
        if response is None or response.status_code != 200:
            document.setdefault("x-unavailable", []).append(name)
            continue
        service = response.json()
        for path, item in service.get("paths", {}).items():
            if path.startswith(_NOT_PUBLIC) or upstream(path) != name:
                continue
            public = f"/api/v1{path}"
            merged = document["paths"].setdefault(public, {})
            for operation, spec in item.items():
                if operation in _OPERATIONS:
                    spec = {
                        **spec,
                        "parameters": [
                            p for p in spec.get("parameters", []) if p.get("name") != "x-techport-identity"
                        ],
                    }
                    merged[operation] = spec
        document["components"]["schemas"].update(service.get("components", {}).get("schemas", {}))
    return document
