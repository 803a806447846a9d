"""The job queue as seen by its clients (bot, CLI) and its workers: task names, queues, time
limits (``names``), the typed contract of each kind's parameters and results and the outbox
kinds (``contracts``), the Celery app factory (``app``) and job submission (``submit``).
Imports no task code and no torch, so the bot can enqueue work by name."""
