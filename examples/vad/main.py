"""Entry point of the VAD example consumer, a Cloud Function of its own: infra/vad.tf builds
it from this folder alone (main.py, vad_consumer.py, requirements.txt) when
vad_consumer_enabled is set. A finished-recording event from the recordings topic gets a
voice-activity sidecar next to its WAV. docs/consumers.md."""

import functions_framework
import vad_consumer


@functions_framework.cloud_event
def analyze_recording(cloud_event):
    vad_consumer.handle_event(cloud_event)
