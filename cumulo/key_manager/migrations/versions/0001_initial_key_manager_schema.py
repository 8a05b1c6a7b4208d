"""initial key manager schema

Revision ID: 0001
Revises:
Create Date: 2026-12-07 03:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_key",
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", name=op.f("pk_project_key")),
    )
    op.create_table(
        "secret",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("creator_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("secret_type", sa.String(length=80), nullable=False),
        sa.Column("algorithm", sa.String(length=255), nullable=True),
        sa.Column("bit_length", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=255), nullable=True),
        sa.Column("expiration", sa.DateTime(), nullable=True),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("cipher_text", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret")),
    )
    with op.batch_alter_table("secret", schema=None) as batch_op:
        batch_op.create_index("ix_secret_project_created", ["project_id", "created_at"])
    op.create_table(
        "secret_metadatum",
        sa.Column("secret_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["secret_id"],
            ["secret.id"],
            name=op.f("fk_secret_metadatum_secret_id_secret"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("secret_id", "key", name=op.f("pk_secret_metadatum")),
    )
    op.create_table(
        "secret_consumer",
        sa.Column("secret_id", sa.String(length=36), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["secret_id"],
            ["secret.id"],
            name=op.f("fk_secret_consumer_secret_id_secret"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "secret_id", "service", "resource_type", "resource_id", name=op.f("pk_secret_consumer")
        ),
    )
    op.create_table(
        "container",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("creator_id", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_container")),
    )
    with op.batch_alter_table("container", schema=None) as batch_op:
        batch_op.create_index("ix_container_project_created", ["project_id", "created_at"])
    op.create_table(
        "container_secret",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("container_id", sa.String(length=36), nullable=False),
        sa.Column("secret_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["container_id"],
            ["container.id"],
            name=op.f("fk_container_secret_container_id_container"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["secret_id"],
            ["secret.id"],
            name=op.f("fk_container_secret_secret_id_secret"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_container_secret")),
        sa.UniqueConstraint(
            "container_id", "secret_id", "name", name=op.f("uq_container_secret_container_id")
        ),
    )
    with op.batch_alter_table("container_secret", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_container_secret_container_id"), ["container_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_container_secret_secret_id"), ["secret_id"], unique=False
        )
    op.create_table(
        "secret_order",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("creator_id", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("secret_id", sa.String(length=36), nullable=True),
        sa.Column("container_id", sa.String(length=36), nullable=True),
        sa.Column("error_status_code", sa.String(length=16), nullable=True),
        sa.Column("error_reason", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_order")),
    )
    with op.batch_alter_table("secret_order", schema=None) as batch_op:
        batch_op.create_index("ix_secret_order_project_created", ["project_id", "created_at"])
    op.create_table(
        "acl",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.String(length=36), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("project_access", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acl")),
        sa.UniqueConstraint(
            "entity_type", "entity_id", "operation", name=op.f("uq_acl_entity_type")
        ),
    )
    op.create_table(
        "acl_user",
        sa.Column("acl_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["acl_id"], ["acl.id"], name=op.f("fk_acl_user_acl_id_acl"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("acl_id", "user_id", name=op.f("pk_acl_user")),
    )


def downgrade() -> None:
    op.drop_table("acl_user")
    op.drop_table("acl")
    with op.batch_alter_table("secret_order", schema=None) as batch_op:
        batch_op.drop_index("ix_secret_order_project_created")
    op.drop_table("secret_order")
    with op.batch_alter_table("container_secret", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_container_secret_secret_id"))
        batch_op.drop_index(batch_op.f("ix_container_secret_container_id"))
    op.drop_table("container_secret")
    with op.batch_alter_table("container", schema=None) as batch_op:
        batch_op.drop_index("ix_container_project_created")
    op.drop_table("container")
    op.drop_table("secret_consumer")
    op.drop_table("secret_metadatum")
    with op.batch_alter_table("secret", schema=None) as batch_op:
        batch_op.drop_index("ix_secret_project_created")
    op.drop_table("secret")
    op.drop_table("project_key")
