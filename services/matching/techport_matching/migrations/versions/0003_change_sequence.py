"""change sequence: replicas catch up by commit order instead of by clock

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("students", "vacancies", "erased_students")


def upgrade() -> None:
    op.create_table(
        "change_counter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Rows stored before this migration carry change 0; an index built from the database holds them.
    op.execute("INSERT INTO change_counter (id, value) VALUES (1, 0)")
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False))
            batch_op.create_index(batch_op.f(f"ix_{table}_change_seq"), ["change_seq"], unique=False)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_change_seq"))
            batch_op.drop_column("change_seq")
    op.drop_table("change_counter")
