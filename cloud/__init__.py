"""ChargeMitra cloud: API, ingest, marketplace, payments, device provisioning."""

__version__ = "0.1.0"
