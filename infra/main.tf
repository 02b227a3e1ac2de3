# Omi wearable audio receiver on Google Cloud.
#
#   Omi app --POST /<token>--> receive_chunk (HTTP function) --> topic audio-chunks, or with
#                              assembler_shards > 1 topic audio-chunks-<crc32(uid) % N>
#   Cloud Scheduler --tick/min, one job per shard--> topic assembler-ticks
#   topic assembler-ticks --Eventarc--> assemble_recordings (one pass per tick message)
#   assemble_recordings <--pull-- subscription audio-chunks-assembler, or with
#                                 assembler_shards > 1 one per shard topic (-0, -1, ...)
#                       --> recordings bucket (one WAV per recording)
#                       --> topic recordings (one event per finished recording)
#                       --> topic audio-chunks-dead-letter (poison chunks; kept by <name>-hold)
#   topic recordings --Eventarc--> analyze_recording (optional example consumer, vad.tf)
#                    --> <recording>.vad.json next to each WAV
#   topic recordings --Eventarc--> compact_recording (optional, compaction.tf)
#                    --> <recording>.flac or .opus in place of each WAV
#
# Files: storage.tf (buckets, source zip), pubsub.tf, functions.tf, iam.tf, agents.tf
# (Google's service agents and the first apply's waits), secrets.tf, scheduler.tf,
# monitoring.tf, vad.tf, compaction.tf, outputs.tf.

locals {
  # On every resource that takes labels, through the providers' default_labels (versions.tf);
  # by hand only where those do not reach (alert policies' and channels' user_labels).
  labels = merge(var.labels, { app = "omi-receiver" })

  # The Cloud Functions runtime; main.py and requirements.txt sit at the root of the zip.
  runtime = "python312"

  # Function names (Cloud Run service names too); log filters use them before the
  # functions exist.
  ingest_function_name    = "${var.name_prefix}-receive-chunk"
  assembler_function_name = "${var.name_prefix}-assemble-recordings"
  vad_function_name       = "${var.name_prefix}-analyze-recording"
  function_names = {
    ingest    = local.ingest_function_name
    assembler = local.assembler_function_name
    vad       = local.vad_function_name
    compactor = "${var.name_prefix}-compact-recording"
  }

  recordings_bucket_name = coalesce(var.recordings_bucket_name, "${var.project_id}-${var.name_prefix}-recordings")
  source_bucket_name     = "${var.project_id}-${var.name_prefix}-fn-source"

  # Created by Terraform before anything grants it a role (agents.tf).
  pubsub_service_agent = google_project_service_identity.pubsub.email

  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project = var.project_id
  service = each.value

  # Turning an API off on destroy would break anything else in the project that uses it.
  disable_on_destroy = false
}
