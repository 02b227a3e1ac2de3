"""Entry point of the VAD example consumer (a Cloud Function of its own, deployed from this
folder by infra/vad.tf when vad_consumer_enabled): a finished-recording event from the
recordings topic gets a voice-activity sidecar next to its WAV. docs/consumers.md."""

import functions_framework

import vad_consumer


@functions_framework.cloud_event
def analyze_recording(cloud_event):
    vad_consumer.handle_event(cloud_event)
