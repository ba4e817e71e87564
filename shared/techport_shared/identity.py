"""The caller's identity, passed by the gateway to the services as a short-lived signed token (JWT, HS256).

Every service verifies it and refuses a request without a valid one, so a call straight to a service inside
the cluster does not bypass the gateway's authentication.
"""

from __future__ import annotations

import time
from typing import Literal

import jwt
from pydantic import BaseModel

IDENTITY_HEADER = "X-Techport-Identity"
_ISSUER = "techport-gateway"
_AUDIENCE = "techport-services"


class Identity(BaseModel):
    role: Literal["operator", "organisation", "service"]
    organisation_id: str | None = None
    # For role "service": which one (matching asking members for a key, or handling another's event).
    service: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def acts_for(self, organisation_id: str | None) -> bool:
        return self.is_operator or (organisation_id is not None and self.organisation_id == organisation_id)


OPERATOR = Identity(role="operator")


def organisation(organisation_id: str) -> Identity:
    return Identity(role="organisation", organisation_id=organisation_id)


def service_identity(name: str) -> Identity:
    return Identity(role="service", service=name)


class InvalidIdentity(Exception):
    pass


def issue_token(identity: Identity, secret: str, ttl_s: int = 60) -> str:
    now = int(time.time())
    claims = {
        "iss": _ISSUER,
        "aud": _AUDIENCE,
        "iat": now,
        "exp": now + ttl_s,
        "role": identity.role,
        "org": identity.organisation_id,
        "svc": identity.service,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(token: str, secret: str) -> Identity:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=_AUDIENCE,
            issuer=_ISSUER,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
        return Identity(role=claims["role"], organisation_id=claims.get("org"), service=claims.get("svc"))
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise InvalidIdentity(str(exc)) from None
