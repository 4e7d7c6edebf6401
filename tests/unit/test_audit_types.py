"""The event types `devtrust audit ls --type` accepts are the ones the services write."""

from __future__ import annotations

from inventory.services import audit


def test_every_event_type_the_services_record_is_listable() -> None:
    constants = {
        value for name, value in vars(audit).items() if name.isupper() and isinstance(value, str)
    }
    assert constants == set(audit.EVENT_TYPES)
    assert len(audit.EVENT_TYPES) == len(constants)
