"""Dead letters: bus records the router set aside, with the reason, for an operator.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("letter_id", sa.String(64), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.LargeBinary(length=16 * 1024 * 1024), nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_dead_letters_at", "dead_letters", ["at_ms"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_at", "dead_letters")
    op.drop_table("dead_letters")
