"""`python -m techport_members serve|migrate`: what the service's container runs."""

from techport_shared.entrypoint import main

from techport_members.main import MIGRATIONS
from techport_members.settings import MembersSettings

if __name__ == "__main__":
    main("members", "techport_members.main:create_app", MembersSettings, MIGRATIONS)
