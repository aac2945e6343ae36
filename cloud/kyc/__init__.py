"""Host KYC: PAN and proof-of-address documents, encrypted at rest, verified by an admin."""
