from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MATCHES_FOUND = Counter("techport_matching_matches_found_total", "Matches found.", ["trigger"])
MATCHES_WITHDRAWN = Counter("techport_matching_matches_withdrawn_total", "Matches withdrawn.", ["reason"])
PARTNERSHIPS = Counter("techport_matching_partnerships_total", "Partnership events.", ["event"])
SCORING_SECONDS = Histogram(
    "techport_matching_scoring_seconds",
    "Time to find the matches of one student or vacancy in the index.",
    ["trigger"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
INDEX_SIZE = Gauge("techport_matching_index_entries", "Live entries in the matching index.", ["entity"])
INDEX_BYTES = Gauge("techport_matching_index_bytes", "Bytes of the matching index's arrays.")
