"""Login sessions: refresh tokens (as SHA-256 hashes), per user and device, revocable.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("refresh_hash", sa.String(64), nullable=False),
        sa.Column("previous_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_sessions_refresh", "sessions", ["refresh_hash"], unique=True)
    op.create_index("ix_sessions_previous", "sessions", ["previous_hash"])
    op.create_index("ix_sessions_user_device", "sessions", ["user_id", "device_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_user_device", "sessions")
    op.drop_index("ix_sessions_previous", "sessions")
    op.drop_index("ix_sessions_refresh", "sessions")
    op.drop_table("sessions")
