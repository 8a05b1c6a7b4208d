from cumulo.common.db import run_migrations_online
from cumulo.dashboard.models import Base

run_migrations_online(Base.metadata)
