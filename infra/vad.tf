# ---------------------------------------------------------------------------------------
# Optional example downstream consumer (var.vad_consumer_enabled, off by default):
# analyze_recording runs voice activity detection on every finished recording and writes
# recordings/<uid>/<day>/<start>.vad.json next to the WAV (examples/vad/, docs/consumers.md).
# Copy this file's pattern to hang ASR or embeddings on the pipeline.
#
#   topic recordings --Eventarc (retried)--> analyze_recording --> <recording>.vad.json
#
# Its source is examples/vad/ alone, with its own requirements (webrtcvad is not in the
# other functions' zip), zipped into its own object in the source bucket. The function
# itself is google_cloudfunctions2_function.this["vad"], with the others (functions.tf).
#
# Its identity may read recordings/ objects and create, overwrite and delete .vad.json
# sidecars there, and nothing else: not the assembler's state/ and work/ objects, not
# Pub/Sub (Eventarc delivers the events as the existing trigger account, which gets
# run.invoker on this function too).
# ---------------------------------------------------------------------------------------

locals {
  # The consumer's source: an allow-list, as for the other functions (storage.tf), of
  # fileset() globs relative to `dir`. The zip holds them at its root, as a function expects.
  vad_source = {
    dir   = "${path.module}/../examples/vad"
    files = ["main.py", "vad_consumer.py", "requirements.txt"]
  }

  # Object names in IAM conditions: projects/_/buckets/<bucket>/objects/<object name>.
  recordings_objects = "projects/_/buckets/${local.recordings_bucket_name}/objects/"

  # Sizing: one recording at a time per instance. A 60-minute WAV (~115 MB at 16 kHz) is
  # streamed through a few MiB of buffer; reading and analyzing it takes seconds.
  vad_memory          = "512Mi"
  vad_cpu             = "1"
  vad_timeout_seconds = 300
  vad_max_instances   = 10

  # The consumer's grants on the recordings bucket, each narrowed by an IAM condition on
  # the object name (the bucket has uniform access, which conditions need).
  vad_grants = {
    reads_recordings = {
      role        = "roles/storage.objectViewer"
      title       = "recordings-only"
      description = "Read the recordings (recordings/ objects), not the assembler's state/ and work/ objects."
      expression  = "resource.name.startsWith(\"${local.recordings_objects}recordings/\")"
    }
    writes_sidecars = {
      role        = "roles/storage.objectUser"
      title       = "vad-sidecars-only"
      description = "Create, overwrite and delete the .vad.json sidecars next to the recordings, and no other object."
      expression  = "resource.name.startsWith(\"${local.recordings_objects}recordings/\") && resource.name.endsWith(\".vad.json\")"
    }
  }
}

data "archive_file" "vad" {
  count = var.vad_consumer_enabled ? 1 : 0

  type        = "zip"
  output_path = "${path.module}/.build/vad-source.zip"

  dynamic "source" {
    for_each = toset(flatten([for glob in local.vad_source.files : fileset(local.vad_source.dir, glob)]))
    content {
      filename = source.value
      content  = file("${local.vad_source.dir}/${source.value}")
    }
  }

  lifecycle {
    precondition {
      condition     = alltrue([for glob in local.vad_source.files : length(fileset(local.vad_source.dir, glob)) > 0])
      error_message = "An entry of local.vad_source.files matches no file: a file was moved or renamed."
    }
  }
}

# Named by the zip's hash, like the other functions' source: a change to the example
# uploads a new object and redeploys this function only.
resource "google_storage_bucket_object" "vad_source" {
  count = var.vad_consumer_enabled ? 1 : 0

  name         = "vad-source-${data.archive_file.vad[0].output_md5}.zip"
  bucket       = google_storage_bucket.source.name
  source       = data.archive_file.vad[0].output_path
  content_type = "application/zip"
}

# Its own identity. Here rather than in iam.tf's map so that everything the consumer adds
# sits in this file and exists only when it is enabled.
resource "google_service_account" "vad" {
  count = var.vad_consumer_enabled ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-vad"
  display_name = "Omi receiver VAD consumer (analyze_recording)"

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "vad" {
  for_each = var.vad_consumer_enabled ? local.vad_grants : {}

  bucket = google_storage_bucket.recordings.name
  role   = each.value.role
  member = "serviceAccount:${google_service_account.vad[0].email}"

  condition {
    title       = each.value.title
    description = each.value.description
    expression  = each.value.expression
  }
}
