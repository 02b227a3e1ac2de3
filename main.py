"""Cloud Functions entry points (2nd gen, functions-framework). Thin: each one hands the
request or event to the package.

  receive_chunk        HTTP; the URL pasted in the Omi app.           omi_receiver.ingest
  assemble_recordings  CloudEvent; a tick from Cloud Scheduler via
                       Pub/Sub runs one assembler pass.                omi_receiver.assembler
  analyze_recording    CloudEvent; a finished-recording event gets a
                       voice-activity sidecar (optional example
                       consumer, docs/consumers.md).                   omi_receiver.vad
"""

import functions_framework

from omi_receiver import assembler, ingest, vad


@functions_framework.http
def receive_chunk(request):
    return ingest.handle_http(request)


@functions_framework.cloud_event
def assemble_recordings(cloud_event):
    assembler.handle_tick(cloud_event)


@functions_framework.cloud_event
def analyze_recording(cloud_event):
    vad.handle_event(cloud_event)
