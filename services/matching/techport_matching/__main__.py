"""`python -m techport_matching serve|migrate`: what the service's container runs."""

from techport_shared.entrypoint import main

from techport_matching.main import MIGRATIONS
from techport_matching.settings import MatchingSettings

if __name__ == "__main__":
    main("matching", "techport_matching.main:create_app", MatchingSettings, MIGRATIONS)
