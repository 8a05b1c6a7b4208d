from cumulo.common.db import run_migrations_online
from cumulo.ec2.models import Base

run_migrations_online(Base.metadata)
