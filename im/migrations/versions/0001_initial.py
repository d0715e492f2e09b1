"""Initial schema: users, conversations, members (with cursors), messages.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", Id64, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("member_version", sa.BigInteger(), nullable=False),
        sa.Column("history_visible", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "members",
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), primary_key=True),
        sa.Column("role", sa.SmallInteger(), nullable=False),
        sa.Column("joined_seq", sa.BigInteger(), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("read_seq", sa.BigInteger(), nullable=False),
        sa.Column("joined_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_members_user", "members", ["user_id", "conversation_id"])
    op.create_index("ix_members_read", "members", ["conversation_id", "read_seq"])
    op.create_table(
        "messages",
        sa.Column("msg_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("sender_id", sa.BigInteger(), nullable=False),
        sa.Column("sender_device", sa.String(64), nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(length=16 * 1024 * 1024), nullable=False),
        sa.Column("server_ts", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conv_seq"),
    )


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_index("ix_members_read", "members")
    op.drop_index("ix_members_user", "members")
    op.drop_table("members")
    op.drop_table("conversations")
    op.drop_table("users")
