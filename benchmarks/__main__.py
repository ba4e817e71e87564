"""`make bench`: every benchmark, or one: `python -m benchmarks matching [--sizes 10000,100000]`."""

from __future__ import annotations

import sys

from benchmarks import gateway, history, matching, pipeline, replicas

SUITES = {
    "matching": matching.main,
    "gateway": gateway.main,
    "pipeline": pipeline.main,
    "replicas": replicas.main,
    "history": history.main,
}

if __name__ == "__main__":
    names = [a for a in sys.argv[1:2] if a in SUITES] or list(SUITES)
    rest = sys.argv[2:] if sys.argv[1:2] and sys.argv[1] in SUITES else sys.argv[1:]
    for name in names:
        SUITES[name](rest)
