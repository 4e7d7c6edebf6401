"""Service layer: each public function is one transaction over a UnitOfWork.

Functions ending in ``_within`` do their work inside a transaction the caller already
opened, so a larger operation (an enrollment ceremony) can commit them together.
"""
