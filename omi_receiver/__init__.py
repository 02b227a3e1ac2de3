"""Receiver for the Omi wearable's real-time audio stream on Google Cloud.

ingest (HTTP) -> Pub/Sub -> assembler (tick-driven) -> one WAV per recording in GCS.
"""
