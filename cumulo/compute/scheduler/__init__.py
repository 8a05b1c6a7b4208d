"""The scheduler: filters drop hosts that cannot take an instance, weighers order the rest."""
