"""Celery workers: thin tasks that take a job id, load rows through db/, call hps/, and write
results and an outbox row. See ``worker.app`` for the app and ``hps worker`` to start one."""
