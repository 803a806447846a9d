"""The job queue as seen by its clients (bot, CLI) and its workers: task names, queues, time
limits, the Celery app factory and job submission. Imports no task code and no torch, so the bot
can enqueue work by name."""
