"""Group lifecycle: description, avatar, dissolution and a change counter on
conversations; invite links and join requests.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Server defaults fill the rows that already exist.
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("description", sa.String(1000), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("avatar", sa.String(512), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("dissolved_at", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("change_version", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.create_table(
        "group_invites",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("link_id", sa.String(16), nullable=False),
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("approval_required", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_group_invites_link", "group_invites", ["link_id"], unique=True)
    op.create_index("ix_group_invites_conversation", "group_invites", ["conversation_id"])
    op.create_table(
        "group_join_requests",
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), primary_key=True),
        sa.Column("link_id", sa.String(16), nullable=False),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("group_join_requests")
    op.drop_index("ix_group_invites_conversation", "group_invites")
    op.drop_index("ix_group_invites_link", "group_invites")
    op.drop_table("group_invites")
    with op.batch_alter_table("conversations") as batch:
        for column in ("change_version", "dissolved_at", "avatar", "description"):
            batch.drop_column(column)
