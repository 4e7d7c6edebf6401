"""The device agent: what runs on the device that wants to be trusted."""
