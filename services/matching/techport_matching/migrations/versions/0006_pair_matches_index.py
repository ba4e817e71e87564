"""matches of a company and a school found by an index: whether a pair reached the partnership threshold is
asked for every pair a decision matches, and without one it read the whole matches table

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_matches_organisation_school", "matches", ["organisation_id", "school_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_matches_organisation_school", table_name="matches")
