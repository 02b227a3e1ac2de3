"""Cloud Functions entry points (2nd gen, functions-framework). Thin: each one hands the
request or event to the runtime package, the only code deployed with this file.

  receive_chunk        HTTP; the URL pasted in the Omi app.           omi_receiver.runtime.ingest
  assemble_recordings  CloudEvent; a tick from Cloud Scheduler via
                       Pub/Sub runs one assembler pass.                omi_receiver.runtime.assembler
  compact_recording    CloudEvent; a finished-recording event turns
                       its WAV into FLAC or Opus (optional, off).      omi_receiver.runtime.compaction

The optional VAD example consumer has an entry point and a source of its own
(examples/vad/main.py).
"""

import functions_framework

from omi_receiver.runtime import assembler, compaction, ingest


@functions_framework.http
def receive_chunk(request):
    return ingest.handle_http(request)


@functions_framework.cloud_event
def assemble_recordings(cloud_event):
    assembler.handle_tick(cloud_event)


@functions_framework.cloud_event
def compact_recording(cloud_event):
    compaction.handle_event(cloud_event)
