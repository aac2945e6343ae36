"""MQTT ingest: decoding, batching, writing and acknowledging device messages."""
