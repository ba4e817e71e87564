from __future__ import annotations

from prometheus_client import Counter

REGISTRATIONS = Counter(
    "techport_members_registrations_total",
    "Records created or changed, by entity, organisation kind or event, and channel (api, ingress).",
    ["entity", "kind", "channel"],
)
INGRESS = Counter(
    "techport_members_ingress_total", "Partner ingress events by outcome and reason.", ["outcome", "reason"]
)
UNKNOWN_SKILLS = Counter(
    "techport_members_unknown_skills_total", "Skills not in the vocabulary, kept as free text."
)
RETIRED_INGRESS = Counter(
    "techport_members_retired_ingress_total",
    "Records on version 1's shared ingress topic, which is retired: none of them is stored.",
)
