"""Message events: what an event acts on (refers_to), and the current state of an
edited or recalled message (edited_at, recalled, edit_seq).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("refers_to", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("edited_at", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("recalled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("edit_seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index("ix_messages_refers_to", "messages", ["refers_to"])


def downgrade() -> None:
    op.drop_index("ix_messages_refers_to", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("edit_seq")
        batch.drop_column("recalled")
        batch.drop_column("edited_at")
        batch.drop_column("refers_to")
