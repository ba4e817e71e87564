"""`python -m techport_gateway serve|migrate`: what the service's container runs."""

from techport_shared.entrypoint import main

from techport_gateway.main import MIGRATIONS
from techport_gateway.settings import GatewaySettings

if __name__ == "__main__":
    main("gateway", "techport_gateway.main:create_app", GatewaySettings, MIGRATIONS)
