"""Users, roles and hosts (KYC)."""
