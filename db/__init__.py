"""Database layer: models, engine/session factories and Discord-free domain operations.

Import the submodules you need (``db.ingest``, ``db.jobs``, ...); this package imports
nothing eagerly so that tools such as Alembic can load ``db.models`` alone.
"""
