"""Block Storage tables. Plain rows: the rules live in cumulo.volume.core."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cumulo.common.db import make_base, utcnow

Base = make_base("volume")

UUID = String(36)


class VolumeType(Base):
    __tablename__ = "volume_type"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(String(255))
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    # The QoS specs associated with it (qos-specs/{id}/associate).
    qos_specs_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class VolumeTypeEncryption(Base):
    """A volume type's encryption (provider, cipher, key size, where it is done), as
    Cinder keeps it for Nova's encryptors: a volume of such a type is a LUKS container
    whose key the Key Manager keeps (cumulo.volume.encryption)."""

    __tablename__ = "volume_type_encryption"
    volume_type_id: Mapped[str] = mapped_column(
        ForeignKey("volume_type.id", ondelete="CASCADE"), primary_key=True
    )
    encryption_id: Mapped[str] = mapped_column(UUID, unique=True)
    provider: Mapped[str] = mapped_column(String(255))
    cipher: Mapped[str | None] = mapped_column(String(255))
    key_size: Mapped[int | None] = mapped_column(Integer)
    control_location: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class QosSpecs(Base):
    """Named QoS limits for front-end (the hypervisor), back-end or both consumers."""

    __tablename__ = "qos_specs"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    consumer: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class QosSpecValue(Base):
    __tablename__ = "qos_spec_value"
    qos_id: Mapped[str] = mapped_column(
        ForeignKey("qos_specs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class VolumeTypeAccess(Base):
    """A project that may use a private volume type."""

    __tablename__ = "volume_type_access"
    type_id: Mapped[str] = mapped_column(
        ForeignKey("volume_type.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class VolumeTypeExtraSpec(Base):
    __tablename__ = "volume_type_extra_spec"
    type_id: Mapped[str] = mapped_column(
        ForeignKey("volume_type.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Volume(Base):
    __tablename__ = "volume"
    __table_args__ = (
        Index("ix_volume_project_created", "project_id", "created_at"),
        Index("ix_volume_host_size", "host", "size"),
    )
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    description: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), index=True)
    # attached / detached / attaching / detaching (Cinder's attach_status).
    attach_status: Mapped[str] = mapped_column(String(32), default="detached")
    availability_zone: Mapped[str] = mapped_column(String(255))
    type_id: Mapped[str] = mapped_column(ForeignKey("volume_type.id"))
    # host@backend#pool of the backend holding it; "" until the scheduler placed it.
    host: Mapped[str] = mapped_column(String(255))
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    readonly: Mapped[bool] = mapped_column(Boolean, default=False)
    multiattach: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot_id: Mapped[str | None] = mapped_column(UUID)
    source_volid: Mapped[str | None] = mapped_column(UUID)
    image_id: Mapped[str | None] = mapped_column(String(64))
    # The generic volume group it belongs to (3.13+), if any.
    group_id: Mapped[str | None] = mapped_column(UUID, index=True)
    # Cinder's migration_status: None (never moved), starting, migrating, completing,
    # success or error; "target:<id>" on the new volume a migration fills.
    migration_status: Mapped[str | None] = mapped_column(String(255))
    # The status to go back to after a retype or a locked migration (Cinder's).
    previous_status: Mapped[str | None] = mapped_column(String(32))
    # An encrypted volume's key: a secret of the Key Manager, owned by its project
    # (cumulo.volume.encryption); None for a volume of an unencrypted type.
    encryption_key_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class VolumeMetadata(Base):
    """User metadata (kind "user") and image metadata (kind "image") of a volume."""

    __tablename__ = "volume_metadata"
    volume_id: Mapped[str] = mapped_column(
        ForeignKey("volume.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Snapshot(Base):
    __tablename__ = "snapshot"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volume.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), index=True)
    # What os-update_snapshot_status last reported ("80%"); None: by the status.
    progress: Mapped[str | None] = mapped_column(String(255))
    # The group snapshot it was taken for (3.14+), if any.
    group_snapshot_id: Mapped[str | None] = mapped_column(UUID, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class SnapshotMetadata(Base):
    __tablename__ = "snapshot_metadata"
    snapshot_id: Mapped[str] = mapped_column(
        ForeignKey("snapshot.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Backup(Base):
    """A volume's backup: its data is objects in the owner's Object Storage account
    (cumulo.volume.backup_store); the row is its state (Cinder's backups table)."""

    __tablename__ = "backup"
    __table_args__ = (Index("ix_backup_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    volume_id: Mapped[str] = mapped_column(UUID, index=True)  # the volume may be gone since
    snapshot_id: Mapped[str | None] = mapped_column(UUID)
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    # creating, available, deleting, error, error_deleting, restoring (Cinder's).
    status: Mapped[str] = mapped_column(String(32), index=True)
    fail_reason: Mapped[str | None] = mapped_column(String(255))
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    # The backend (host@backend) whose manager does the work (the volume's at backup time).
    host: Mapped[str] = mapped_column(String(255))
    # The Object Storage account and container holding its objects (the owner's
    # account; an imported backup keeps the one it was made in).
    account: Mapped[str] = mapped_column(String(255))
    container: Mapped[str] = mapped_column(String(255))
    # Where its objects are in the container: <prefix>-00001..., <prefix>_metadata.
    object_prefix: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(Integer)
    object_count: Mapped[int] = mapped_column(Integer, default=0)
    # An incremental backup's parent (the volume's latest backup when it was made).
    parent_id: Mapped[str | None] = mapped_column(UUID, index=True)
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")  # 3.43 metadata
    # The backed-up volume's type (what an encrypted backup restores into) and, for an
    # encrypted volume, a clone of its key the backup owns (Cinder's backup
    # encryption_key_id: the backup outlives the volume; deleted with the backup).
    volume_type_id: Mapped[str | None] = mapped_column(String(36))
    encryption_key_id: Mapped[str | None] = mapped_column(String(64))
    data_timestamp: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class Attachment(Base):
    __tablename__ = "attachment"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volume.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    instance_uuid: Mapped[str | None] = mapped_column(String(64))
    # reserved -> attaching -> attached -> detached (Cinder's attach_status).
    status: Mapped[str] = mapped_column(String(32))
    attach_mode: Mapped[str] = mapped_column(String(4), default="rw")
    mountpoint: Mapped[str | None] = mapped_column(String(255))
    attached_host: Mapped[str | None] = mapped_column(String(255))
    connector: Mapped[str | None] = mapped_column(Text)  # JSON
    connection_info: Mapped[str | None] = mapped_column(Text)  # JSON
    attached_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


class QuotaLimit(Base):
    """A project's limit overriding the configured default (os-quota-sets update)."""

    __tablename__ = "quota_limit"
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(255), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class QuotaClass(Base):
    """A quota class's limit (os-quota-class-sets); class "default" overrides the
    configured defaults every project starts from."""

    __tablename__ = "quota_class"
    class_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource: Mapped[str] = mapped_column(String(255), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class Transfer(Base):
    """A volume offered to another project (os-volume-transfer): whoever presents its
    id and auth key takes the volume. Only a hash of the key is kept."""

    __tablename__ = "transfer"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volume.id", ondelete="CASCADE"), index=True)
    source_project_id: Mapped[str] = mapped_column(String(64), index=True)
    destination_project_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    salt: Mapped[str] = mapped_column(String(255))
    crypt_hash: Mapped[str] = mapped_column(String(255))
    no_snapshots: Mapped[bool] = mapped_column(Boolean, default=False)
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GroupType(Base):
    __tablename__ = "group_type"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(String(255))
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GroupTypeSpec(Base):
    __tablename__ = "group_type_spec"
    group_type_id: Mapped[str] = mapped_column(
        ForeignKey("group_type.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Group(Base):
    """A generic volume group (3.13+): volumes of the given types, snapshotted together.
    Its status is kept for what the API sets (deleting, reset_status); while a member
    is still being made, it reads as `creating`."""

    __tablename__ = "volume_group"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    availability_zone: Mapped[str] = mapped_column(String(255))
    group_type_id: Mapped[str] = mapped_column(ForeignKey("group_type.id"))
    group_snapshot_id: Mapped[str | None] = mapped_column(UUID)
    source_group_id: Mapped[str | None] = mapped_column(UUID)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GroupVolumeType(Base):
    __tablename__ = "volume_group_type_mapping"
    group_id: Mapped[str] = mapped_column(
        ForeignKey("volume_group.id", ondelete="CASCADE"), primary_key=True
    )
    volume_type_id: Mapped[str] = mapped_column(ForeignKey("volume_type.id"), primary_key=True)


class GroupSnapshot(Base):
    __tablename__ = "group_snapshot"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    group_id: Mapped[str] = mapped_column(ForeignKey("volume_group.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    group_type_id: Mapped[str] = mapped_column(UUID)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Message(Base):
    """A user message (3.3+): what went wrong with a user's resource where the API had
    already answered (Cinder's messages table); hidden once expired."""

    __tablename__ = "message"
    __table_args__ = (Index("ix_message_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(255))
    resource_type: Mapped[str] = mapped_column(String(36))
    resource_uuid: Mapped[str | None] = mapped_column(String(36))
    event_id: Mapped[str] = mapped_column(String(255))
    message_level: Mapped[str] = mapped_column(String(255))
    user_message: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class VolumeServiceRow(Base):
    """A volume service's heartbeat (os-services): the scheduler, or one backend of a
    storage host (host "host@backend") with the capacity and capabilities it reported."""

    __tablename__ = "volume_service"
    __table_args__ = (UniqueConstraint("host", "binary"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(64))
    # A backend's (single) pool: its volumes' host is <host>#<pool>.
    pool: Mapped[str | None] = mapped_column(String(255))
    availability_zone: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    capabilities: Mapped[str | None] = mapped_column(Text)  # JSON, cinder-volume only
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
