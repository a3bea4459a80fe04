"""The core: settings, schema, engine and the database operations that encode the sync rules.

Nothing here imports Flask or Celery.
"""
