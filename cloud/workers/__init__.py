"""Long-running processes of the cloud besides the API (``chargemitra-cloud ingest``)."""
