from techport_gateway.store import metadata
from techport_shared.migrations import run_env

run_env(metadata)
