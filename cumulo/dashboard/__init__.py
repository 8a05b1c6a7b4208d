"""The web dashboard: server-rendered pages, a client of the REST APIs with the
logged-in user's token (never a reader of the databases)."""
