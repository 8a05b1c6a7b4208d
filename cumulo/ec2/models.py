"""The EC2 API's own tables: EC2 ids mapped to OpenStack UUIDs, tags, import tasks.
Everything else (instances, images, volumes...) lives in the services behind it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cumulo.common.db import make_base, utcnow

Base = make_base("ec2")


class Item(Base):
    """One EC2 id (`i-0a1b...`) and the OpenStack resource it names, for good: ids are
    made once and never recomputed, so they survive restarts and renames."""

    __tablename__ = "item"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # the id's prefix: i, ami, vol...
    os_id: Mapped[str] = mapped_column(String(64))
    # The owning project; None for what every project sees (public images).
    project_id: Mapped[str | None] = mapped_column(String(64))
    reservation_id: Mapped[str | None] = mapped_column(String(32))
    client_token: Mapped[str | None] = mapped_column(String(64))
    # A terminated instance's last description (EC2 shows it for an hour), and the like.
    data: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (
        UniqueConstraint("kind", "os_id", name="uq_item_kind_os_id"),
        Index("ix_item_project_token", "project_id", "client_token"),
    )


class Tag(Base):
    """A tag a project put on an item (a public image carries each project's own)."""

    __tablename__ = "tag"
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), default="")


class ImportTask(Base):
    """ImportImage: an object in S3 made into an image, in the background."""

    __tablename__ = "import_task"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))  # active, completed, deleted
    status_message: Mapped[str] = mapped_column(String(255), default="")
    progress: Mapped[str] = mapped_column(String(8), default="0")
    description: Mapped[str] = mapped_column(String(255), default="")
    image_id: Mapped[str | None] = mapped_column(String(32))  # the ami- once made
    data: Mapped[str | None] = mapped_column(Text)  # the disk containers asked for
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
