"""`python -m techport_notifications serve|migrate`: what the service's container runs."""

from techport_shared.entrypoint import main

from techport_notifications.main import MIGRATIONS
from techport_notifications.settings import NotificationsSettings

if __name__ == "__main__":
    main("notifications", "techport_notifications.main:create_app", NotificationsSettings, MIGRATIONS)
