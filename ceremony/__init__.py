"""Attestation verification, the ceremony service and the device agent (see issue 5)."""
