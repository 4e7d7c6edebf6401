"""The enrollment ceremony: attestation checks, the ceremony HTTP service, the agent."""
