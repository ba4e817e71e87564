from techport_matching.store import metadata
from techport_shared.migrations import run_env

run_env(metadata)
