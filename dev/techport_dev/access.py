"""Kafka credentials and ACLs on the local cluster, as `techport_shared.access` names them: a service's
credentials, and a partner's onboarding (what an operator does with a KafkaUser in Kubernetes)."""

from __future__ import annotations

import secrets

from techport_shared.access import SERVICE_GRANTS, Grant, partner_grants, partner_principal

from techport_dev.kafka import LocalKafkaCluster, grant_access


def acls(principal: str, grants: tuple[Grant, ...]) -> list[dict[str, object]]:
    return [
        {
            "principal": principal,
            "resource": grant.resource,
            "name": grant.name,
            "pattern": grant.pattern,
            "operations": list(grant.operations),
        }
        for grant in grants
    ]


def grant_services(cluster: LocalKafkaCluster, passwords: dict[str, str]) -> None:
    """SCRAM users for the services (name -> password), each with only its own grants."""
    cluster.grant(passwords, [acl for name in passwords for acl in acls(name, SERVICE_GRANTS[name])])


def onboard_partner_access(
    bootstrap: str, organisation_id: str, password: str | None = None
) -> tuple[str, str]:
    """A partner's SCRAM user, allowed to write its ingress topic and read its rejected topic, granted through
    the super user's listener `bootstrap`. Returns the user name and the password, which is shown once (the
    cluster keeps only its salted hash)."""
    user = partner_principal(organisation_id)
    password = password or secrets.token_urlsafe(24)
    grant_access(bootstrap, {user: password}, acls(user, partner_grants(organisation_id)))
    return user, password
