"""contract version 2: decisions apart from storing (pending students and vacancies), each vacancy counting
its own open matches (no row shared by every decision); parked outbox events

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from techport_shared.migrations import downgrade_messaging_tables_from_v2, upgrade_messaging_tables_to_v2

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("students", "vacancies"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("pending", sa.Boolean(), nullable=False, server_default=sa.false()))
            batch.add_column(sa.Column("pending_cause", sa.String(length=200), nullable=True))
            batch.add_column(sa.Column("pending_correlation", sa.String(length=200), nullable=True))
            batch.create_index(batch.f(f"ix_{table}_pending"), ["pending"], unique=False)
    with op.batch_alter_table("vacancies") as batch:
        batch.add_column(sa.Column("open_matches", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE vacancies SET open_matches = (SELECT count(*) FROM matches WHERE matches.vacancy_id = "
        "vacancies.vacancy_id AND matches.status = 'open')"
    )
    upgrade_messaging_tables_to_v2()


def downgrade() -> None:
    downgrade_messaging_tables_from_v2()
    with op.batch_alter_table("vacancies") as batch:
        batch.drop_column("open_matches")
    for table in ("students", "vacancies"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(batch.f(f"ix_{table}_pending"))
            batch.drop_column("pending_correlation")
            batch.drop_column("pending_cause")
            batch.drop_column("pending")
