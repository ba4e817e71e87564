"""contract version 2: typed recipients (student, organisation, vacancy contact) everywhere a recipient is
named; unsubscribes bound to the address; what a company may read of a candidate; correlation ids of the
events an email reports on; parked outbox events

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 09:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from techport_shared.migrations import downgrade_messaging_tables_from_v2, upgrade_messaging_tables_to_v2

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Version 1 named a vacancy's contact `vacancy:<id>`; the other kinds by their bare id.
_PREFIX = "vacancy:"
_KIND_OF_TEMPLATE = {
    "student_matches": "student",
    "vacancy_candidates": "vacancy_contact",
    "partnership_formed": "organisation",
}


def _bare(recipient_id: str) -> str:
    return recipient_id.removeprefix(_PREFIX)


def _fingerprint(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def upgrade() -> None:
    bind = op.get_bind()
    old_recipients = bind.execute(
        sa.text("SELECT recipient_id, kind, name, email, language, email_consent FROM recipients")
    ).all()
    old_unsubscribes = bind.execute(sa.text("SELECT recipient_id, unsubscribed_at FROM unsubscribes")).all()
    op.drop_table("recipients")
    op.drop_table("unsubscribes")
    recipients = op.create_table(
        "recipients",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("email_consent", sa.Boolean(), nullable=False),
        sa.Column("level", sa.String(length=20), nullable=True),
        sa.Column("programme", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("kind", "recipient_id", name="pk_recipients"),
    )
    unsubscribes = op.create_table(
        "unsubscribes",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("recipient_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=32), nullable=False),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "recipient_id", name="pk_unsubscribes"),
    )
    by_old_id = {row.recipient_id: row for row in old_recipients}
    if old_recipients:
        op.bulk_insert(
            recipients,
            [
                {
                    "kind": row.kind,
                    "recipient_id": _bare(row.recipient_id),
                    "name": row.name,
                    "email": row.email,
                    "language": row.language,
                    "email_consent": row.email_consent,
                }
                for row in old_recipients
            ],
        )
    kept = [
        {
            "kind": by_old_id[row.recipient_id].kind,
            "recipient_id": _bare(row.recipient_id),
            "address": _fingerprint(by_old_id[row.recipient_id].email),
            "unsubscribed_at": row.unsubscribed_at,
        }
        for row in old_unsubscribes
        if row.recipient_id in by_old_id  # an unsubscribe of nobody we know names no kind: it goes
    ]
    if kept:
        op.bulk_insert(unsubscribes, kept)

    for table in ("notifications", "notification_items"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("recipient_kind", sa.String(length=20), nullable=True))
    bind.execute(
        sa.text(
            "UPDATE notifications SET recipient_id = substr(recipient_id, 9) "
            "WHERE recipient_id LIKE 'vacancy:%'"
        )
    )
    bind.execute(
        sa.text(
            "UPDATE notification_items SET recipient_id = substr(recipient_id, 9) "
            "WHERE recipient_id LIKE 'vacancy:%'"
        )
    )
    for template, kind in _KIND_OF_TEMPLATE.items():
        bind.execute(
            sa.text("UPDATE notifications SET recipient_kind = :kind WHERE template = :template"),
            {"kind": kind, "template": template},
        )
        bind.execute(
            sa.text(
                "UPDATE notification_items SET recipient_kind = :kind WHERE notification_id IN "
                "(SELECT notification_id FROM notifications WHERE template = :template)"
            ),
            {"kind": kind, "template": template},
        )
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("recipient_kind", existing_type=sa.String(length=20), nullable=False)
        batch.alter_column("recipient_id", existing_type=sa.String(length=80), type_=sa.String(length=64))
    with op.batch_alter_table("notification_items") as batch:
        batch.alter_column("recipient_kind", existing_type=sa.String(length=20), nullable=False)
        batch.alter_column("recipient_id", existing_type=sa.String(length=80), type_=sa.String(length=64))
        batch.add_column(sa.Column("correlation_id", sa.String(length=200), nullable=True))
        batch.drop_constraint("uq_items_recipient_subject", type_="unique")
        batch.create_unique_constraint(
            "uq_items_recipient_subject", ["recipient_kind", "recipient_id", "subject_id"]
        )
    upgrade_messaging_tables_to_v2()


def downgrade() -> None:
    """Back to bare ids (a vacancy's contact as `vacancy:<id>`). Lossy where version 1 was wrong: of a
    student and an organisation with the same id, one recipient is kept; unsubscribes lose their address."""
    downgrade_messaging_tables_from_v2()
    bind = op.get_bind()
    with op.batch_alter_table("notification_items") as batch:
        batch.drop_constraint("uq_items_recipient_subject", type_="unique")
        batch.drop_column("correlation_id")
        batch.alter_column("recipient_id", existing_type=sa.String(length=64), type_=sa.String(length=80))
    with op.batch_alter_table("notifications") as batch:
        batch.alter_column("recipient_id", existing_type=sa.String(length=64), type_=sa.String(length=80))
    for table in ("notifications", "notification_items"):
        bind.execute(
            sa.text(
                f"UPDATE {table} SET recipient_id = 'vacancy:' || recipient_id "
                "WHERE recipient_kind = 'vacancy_contact'"
            )
        )
        with op.batch_alter_table(table) as batch:
            batch.drop_column("recipient_kind")
    with op.batch_alter_table("notification_items") as batch:
        batch.create_unique_constraint("uq_items_recipient_subject", ["recipient_id", "subject_id"])
    recipients = bind.execute(
        sa.text("SELECT kind, recipient_id, name, email, language, email_consent FROM recipients")
    ).all()
    unsubscribed = bind.execute(sa.text("SELECT kind, recipient_id, unsubscribed_at FROM unsubscribes")).all()
    op.drop_table("recipients")
    op.drop_table("unsubscribes")
    old_recipients = op.create_table(
        "recipients",
        sa.Column("recipient_id", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("email_consent", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("recipient_id"),
    )
    old_unsubscribes = op.create_table(
        "unsubscribes",
        sa.Column("recipient_id", sa.String(length=80), nullable=False),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recipient_id"),
    )

    def old_id(kind: str, recipient_id: str) -> str:
        return f"{_PREFIX}{recipient_id}" if kind == "vacancy_contact" else recipient_id

    rows = {
        old_id(r.kind, r.recipient_id): {
            "recipient_id": old_id(r.kind, r.recipient_id),
            "kind": r.kind,
            "name": r.name,
            "email": r.email,
            "language": r.language,
            "email_consent": r.email_consent,
        }
        for r in recipients
    }
    if rows:
        op.bulk_insert(old_recipients, list(rows.values()))
    stops = {
        old_id(u.kind, u.recipient_id): {
            "recipient_id": old_id(u.kind, u.recipient_id),
            "unsubscribed_at": u.unsubscribed_at,
        }
        for u in unsubscribed
    }
    if stops:
        op.bulk_insert(old_unsubscribes, list(stops.values()))
