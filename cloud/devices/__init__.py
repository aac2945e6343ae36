"""Edge devices: provisioning, broker credentials, commands."""
