"""The web side of agent-service: REST submission and polling (and the SSE relay), built by
``app.main.create_app``. It reaches the worker only by task name, through ``app.submission``."""
