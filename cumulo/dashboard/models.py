"""The dashboard's one table: its sessions (see sessions.py), shared by every process
that serves the dashboard."""

from __future__ import annotations

from sqlalchemy import Float, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from cumulo.common.db import make_base

Base = make_base("dashboard")


class DashboardSession(Base):
    __tablename__ = "dashboard_session"
    __table_args__ = (Index("ix_dashboard_session_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the cookie's session id
    # The Session, as JSON, encrypted (Fernet): the token never in the clear.
    data: Mapped[bytes] = mapped_column(LargeBinary(16 * 1024 * 1024))
    expires_at: Mapped[float] = mapped_column(Float)  # the token's, as a timestamp
    updated_at: Mapped[float] = mapped_column(Float)
