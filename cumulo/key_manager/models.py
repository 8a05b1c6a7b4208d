"""Key Manager tables. Plain rows: the rules live in cumulo.key_manager.core.

A secret's payload is stored only encrypted (`cipher_text`, AES-GCM under its project's
key, see cumulo.key_manager.crypto); the project keys are stored only wrapped by the
master key kept in the state dir.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
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

Base = make_base("key_manager")


class ProjectKey(Base):
    """A project's key-encryption key, wrapped by the master key (simple_crypto's KEK)."""

    __tablename__ = "project_key"
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped_key: Mapped[str] = mapped_column(Text)  # base64
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Secret(Base):
    __tablename__ = "secret"
    __table_args__ = (Index("ix_secret_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    creator_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    secret_type: Mapped[str] = mapped_column(String(80))
    algorithm: Mapped[str | None] = mapped_column(String(255))
    bit_length: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str | None] = mapped_column(String(255))
    expiration: Mapped[datetime | None] = mapped_column(DateTime)
    # The normalized media type of the payload (text/plain, application/octet-stream,
    # application/pkcs8); null while the secret has no payload.
    content_type: Mapped[str | None] = mapped_column(String(255))
    # base64 of nonce || AES-GCM cipher text (text, as Barbican keeps cypher_text: every
    # driver, aiomysql included, passes it as a plain string).
    cipher_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SecretMetadatum(Base):
    """User metadata of a secret (/v1/secrets/{id}/metadata)."""

    __tablename__ = "secret_metadatum"
    secret_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("secret.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class SecretConsumer(Base):
    """A service's resource that uses a secret (/v1/secrets/{id}/consumers, 1.1)."""

    __tablename__ = "secret_consumer"
    secret_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("secret.id", ondelete="CASCADE"), primary_key=True
    )
    # (MariaDB keys are at most 3072 bytes: the four columns in utf8mb4 stay below.)
    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Container(Base):
    __tablename__ = "container"
    __table_args__ = (Index("ix_container_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    creator_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ContainerSecret(Base):
    __tablename__ = "container_secret"
    __table_args__ = (UniqueConstraint("container_id", "secret_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    container_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("container.id", ondelete="CASCADE"), index=True
    )
    secret_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("secret.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(255))


class ContainerConsumer(Base):
    """A service's use of a container (/v1/containers/{id}/consumers: name and URL)."""

    __tablename__ = "container_consumer"
    container_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("container.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Order(Base):
    __tablename__ = "secret_order"
    __table_args__ = (Index("ix_secret_order_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    creator_id: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(20))
    meta: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    secret_id: Mapped[str | None] = mapped_column(String(36))
    container_id: Mapped[str | None] = mapped_column(String(36))
    error_status_code: Mapped[str | None] = mapped_column(String(16))
    error_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Acl(Base):
    """One operation's ACL ('read') of a secret or a container."""

    __tablename__ = "acl"
    __table_args__ = (UniqueConstraint("entity_type", "entity_id", "operation"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_type: Mapped[str] = mapped_column(String(16))  # secret | container
    entity_id: Mapped[str] = mapped_column(String(36))
    operation: Mapped[str] = mapped_column(String(16))
    project_access: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AclUser(Base):
    __tablename__ = "acl_user"
    acl_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("acl.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
