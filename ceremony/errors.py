"""Every refusal the ceremony can make, in one place, each with the message a user sees.

Two families:

- the verifiers' own (pure functions over bytes): ``AttestationError`` and its kinds for
  TPM structures, ``KeyProofError`` for macOS key proofs. They say what is wrong with
  what the device sent; the service turns them into ``ProofRefused`` (403);
- the service's (``DevtrustError``, so the service and the CLI map them to a status and
  print the message): the device is not enrolled (409), has drifted from its MDM
  profile (403), too many attempts (429), a dependency is down (503), the device CA's
  files are unusable (at start).
"""

from __future__ import annotations

from inventory.errors import AccessDenied, DevtrustError

# -- what the device sent is refused ---------------------------------------------------


class AttestationError(Exception):
    """A device's attestation is refused; the message says what is wrong, in one line."""


class EKCertificateError(AttestationError):
    """The EK certificate is unreadable, untrusted or does not match the EK."""


class AKError(AttestationError):
    """The attestation key's public area or creation proof is refused."""


class ChallengeError(AttestationError):
    """The credential challenge cannot be made, or its answer is wrong."""


class QuoteError(AttestationError):
    """A quote is malformed, not signed by the AK, or does not match the nonce or PCRs."""


class KeyProofError(Exception):
    """The device's macOS key or its signature is refused; the message says why."""


# -- the service's refusals ------------------------------------------------------------


class ProofRefused(DevtrustError):
    """The device's attestation or key proof did not verify; the message says why."""

    http_status = 403


class DeviceNotEnrolled(DevtrustError):
    """The device is registered but not enrolled (for this user): the agent enrolls it."""

    http_status = 409


class DeviceDrifted(AccessDenied):
    """The device no longer matches its MDM profile. The message names the fields, never
    the profile's values; ``for_audit`` has them, for the audit log only."""

    def __init__(self, message: str, *, for_audit: str | None = None) -> None:
        super().__init__(message)
        self.for_audit = for_audit or message


class RateLimited(DevtrustError):
    """Too many attempts for one key; ``retry_after`` seconds (>= 1) until the next is let in."""

    http_status = 429

    def __init__(self, what: str, key: str, retry_after: int) -> None:
        self.what = what
        self.key = key
        self.retry_after = retry_after
        shown = key if key.isprintable() else repr(key)  # the message stays one line
        super().__init__(f"too many {what} for {shown}: try again in {retry_after} s")

    def __reduce__(self) -> tuple[type[RateLimited], tuple[str, str, int]]:
        return type(self), (self.what, self.key, self.retry_after)


class RateLimiterUnavailable(DevtrustError):
    """The rate-limit server cannot be used right now; worth a retry."""

    http_status = 503


class DeviceCAError(Exception):
    """The device CA's files are unusable; the message names the file and what to do."""
