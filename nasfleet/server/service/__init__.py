"""The job service: search jobs, the orchestrator, the Celery scoring task, its app and its workers."""
