"""drop the indexes of the clock-based catch-up (replicas now catch up by change_seq)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 11:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {"students": "updated_at", "vacancies": "updated_at", "erased_students": "recorded_at"}


def upgrade() -> None:
    for table, column in INDEXES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))


def downgrade() -> None:
    for table, column in INDEXES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)
