"""The Celery worker, beat schedule, thin tasks, locks, and the ``devtrust`` CLI.

Importing this package stays cheap: the CLI must answer quickly, so Celery is only
imported by the modules that need it.
"""
