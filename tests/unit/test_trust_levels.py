"""Trust levels: their order, the stored attestation type each one is, and the refusal of a
level below ``device_trust.min_attestation`` (pure: no database)."""

from __future__ import annotations

import pytest

from inventory.domain import AttestationType, TrustLevel
from inventory.errors import AccessDenied
from inventory.preference import (
    DeviceTrust,
    Preference,
    check_attestation,
    from_resource,
    to_resource,
)


def test_levels_are_ordered_weakest_first_and_none_is_a_software_key() -> None:
    assert [level.value for level in sorted(TrustLevel, key=lambda level: level.rank)] == [
        "software_key",
        "tpm_ekpub",
        "tpm_ekcert",
        "tpm_ekcert_trusted",
    ]
    assert AttestationType.NONE.level is TrustLevel.SOFTWARE_KEY
    assert AttestationType.TPM_EKCERT_TRUSTED.level is TrustLevel.TPM_EKCERT_TRUSTED
    assert TrustLevel.TPM_EKCERT.at_least(TrustLevel.TPM_EKPUB)
    assert not TrustLevel.TPM_EKPUB.at_least(TrustLevel.TPM_EKCERT)


@pytest.mark.parametrize("minimum", [None, *TrustLevel])
def test_a_level_passes_exactly_the_minimums_at_or_below_it(minimum: TrustLevel | None) -> None:
    for level in TrustLevel:
        if minimum is None or level.rank >= minimum.rank:
            check_attestation(level, minimum, what="x")
        else:
            with pytest.raises(AccessDenied, match=f"needs {minimum.value}:"):
                check_attestation(level, minimum, what="x")


def test_min_attestation_round_trips_through_the_resource_and_any_is_unset() -> None:
    for minimum in [None, *TrustLevel]:
        trust = DeviceTrust(min_attestation=minimum)
        resource = to_resource(Preference(device_trust=trust))
        assert resource["spec"]["device_trust"]["min_attestation"] == (minimum or "any")
        assert from_resource(resource) == trust
