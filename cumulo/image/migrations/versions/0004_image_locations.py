"""image locations: an ordered list per image (store, what the store reads, metadata)

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-12 10:00:00
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_location",
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(length=64), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["image.id"],
            name=op.f("fk_image_location_image_id_image"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("image_id", "position", name=op.f("pk_image_location")),
    )
    # Each store the old `store` column named held the data at `location`.
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, store, location FROM image WHERE store <> '' AND location <> ''")
    ).all()
    table = sa.table(
        "image_location",
        sa.column("image_id", sa.String),
        sa.column("position", sa.Integer),
        sa.column("store", sa.String),
        sa.column("location", sa.Text),
        sa.column("metadata", sa.Text),
    )
    values = [
        {
            "image_id": image_id,
            "position": position,
            "store": store,
            "location": location,
            "metadata": json.dumps({"store": store}),
        }
        for image_id, stores, location in rows
        for position, store in enumerate(s for s in stores.split(",") if s)
    ]
    if values:
        op.bulk_insert(table, values)
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.drop_column("store")
        batch_op.drop_column("location")


def downgrade() -> None:
    with op.batch_alter_table("image", schema=None) as batch_op:
        batch_op.add_column(sa.Column("store", sa.String(length=1024), server_default=""))
        batch_op.add_column(sa.Column("location", sa.Text(), server_default=""))
    # The old columns hold one location, in every store listed: the first one's.
    conn = op.get_bind()
    held: dict[str, tuple[str, list[str]]] = {}
    for image_id, store, location in conn.execute(
        sa.text("SELECT image_id, store, location FROM image_location ORDER BY position")
    ):
        first, stores = held.setdefault(image_id, (location, []))
        if location == first:
            stores.append(store)
    for image_id, (location, stores) in held.items():
        conn.execute(
            sa.text("UPDATE image SET store = :store, location = :location WHERE id = :id"),
            {"store": ",".join(stores), "location": location, "id": image_id},
        )
    op.drop_table("image_location")
