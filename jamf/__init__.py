"""Jamf Pro API client, record mapping, sync engine and simulator (see issue 3)."""
