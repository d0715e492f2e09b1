"""Blocking and privacy: who blocked whom, and who accepts group invites only from
contacts.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_blocks",
        sa.Column("blocker_id", sa.BigInteger(), primary_key=True),
        sa.Column("blocked_id", sa.BigInteger(), primary_key=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_user_blocks_blocked", "user_blocks", ["blocked_id", "blocker_id"])
    op.create_table(
        "user_privacy",
        sa.Column("user_id", sa.BigInteger(), primary_key=True),
        sa.Column("invites_from_contacts_only", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_privacy")
    op.drop_index("ix_user_blocks_blocked", "user_blocks")
    op.drop_table("user_blocks")
