"""Server side: Flower ServerApp, orchestrator, Celery tasks, SQLModel registry and tenant API."""
