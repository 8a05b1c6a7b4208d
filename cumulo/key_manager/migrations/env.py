from cumulo.common.db import run_migrations_online
from cumulo.key_manager.models import Base

run_migrations_online(Base.metadata)
