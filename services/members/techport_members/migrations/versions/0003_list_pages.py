"""lists and searches page in key order: a school's students by id, open (or closed) vacancies by id

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
    op.create_index("ix_students_school_student", "students", ["school_id", "student_id"], unique=False)
    op.create_index("ix_vacancies_status_vacancy", "vacancies", ["status", "vacancy_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_vacancies_status_vacancy", table_name="vacancies")
    op.drop_index("ix_students_school_student", table_name="students")
