"""notification items found by their subject: each batch asks which of its matches were reported already,
and without an index that read every item ever recorded

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_notification_items_subject_id"), "notification_items", ["subject_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_notification_items_subject_id"), table_name="notification_items")
