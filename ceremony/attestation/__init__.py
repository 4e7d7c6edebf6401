"""Attestation, the server's side: pure checks over the bytes a device sends.

TPM 2.0 (``tpm_verify``, over ``tpm_structures`` read by tpm2-tss, ``ek_cert`` for the
EK certificate and its chain, ``credential`` for MakeCredential) and the macOS key proof
(``macos``). No I/O: every refusal is an AttestationError or a KeyProofError.
"""
