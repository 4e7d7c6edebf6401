"""The device inventory: models, storage, settings and the services that change them.

Nothing here creates an engine, a session or a connection at import time.
"""
