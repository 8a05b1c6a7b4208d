"""Running a cloud on a host: the host packages it needs, `cumulo doctor`, `cumulo purge`."""
