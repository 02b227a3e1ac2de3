"""Receiver for the Omi wearable's real-time audio stream on Google Cloud.

ingest (HTTP) -> Pub/Sub -> assembler (tick-driven) -> one WAV per recording in GCS.

One package, three roles, one folder each:

  runtime/   what the Cloud Functions run; the only part deployed (with main.py)
  ops/       the `omi-receiver` command operators run against a deployment
  devtools/  the local stack, the simulated Omi device and the demo; never deployed
"""
