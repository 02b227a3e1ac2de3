# ---------------------------------------------------------------------------------------
# Optional compaction of finished recordings (var.recordings_compaction, "off" by default):
# compact_recording turns each finished WAV into a verified FLAC (lossless) or Opus (lossy,
# ~14x smaller) next to it, with the WAV's metadata, and then deletes the WAV
# (omi_receiver/runtime/compaction, README "Compaction").
#
#   topic recordings --Eventarc (retried)--> compact_recording --> <recording>.flac|.opus
#                                                              --> WAV deleted
#
# Built from the main source zip (storage.tf: the runtime package holds it); the function is
# google_cloudfunctions2_function.this["compactor"], with the others (functions.tf).
#
# Its identity may read recordings/ objects and the users' state objects (to tell an erase
# from a repeated event), create, overwrite and delete the chosen format's files there, and
# delete WAVs; nothing else: not work/, not Pub/Sub (Eventarc delivers as the trigger account).
# ---------------------------------------------------------------------------------------

locals {
  compaction_enabled = var.recordings_compaction != "off"

  # Sizing: one recording at a time per instance. The WAV is streamed 4 MiB at a time; the
  # encoded file sits in /tmp, which is the instance's memory: FLAC of speech is ~60 % of
  # the WAV, so 1 GiB holds the FLAC of a 600 MB WAV (5.2 h at 16 kHz; the code skips
  # longer ones, logged, keeping the WAV). libopus needs ~215 CPU seconds per audio hour on
  # one vCPU (measured), so Opus stops at 2 h recordings to stay inside 540 s.
  compaction_memory          = "1Gi"
  compaction_cpu             = "1"
  compaction_timeout_seconds = 540
  compaction_max_instances   = 10

  # Grants on the recordings bucket, each narrowed by an IAM condition on the object name.
  compaction_grants = {
    reads_recordings = {
      role        = "roles/storage.objectViewer"
      title       = "recordings-only"
      description = "Read the recordings (recordings/ objects), not the assembler's work/ objects."
      expression  = "resource.name.startsWith(\"${local.recordings_objects}recordings/\")"
    }
    # An erased user's erase marker tells an erase from a repeated event (compactor.py).
    reads_states = {
      role        = "roles/storage.objectViewer"
      title       = "user-states-only"
      description = "Read the users' state objects (state/), to find an erase marker."
      expression  = "resource.name.startsWith(\"${local.recordings_objects}state/\")"
    }
    writes_compacted = {
      role        = "roles/storage.objectUser"
      title       = "compacted-files-only"
      description = "Create, overwrite and delete the .${var.recordings_compaction} files next to the recordings, and no other object."
      expression  = "resource.name.startsWith(\"${local.recordings_objects}recordings/\") && resource.name.endsWith(\".${var.recordings_compaction}\")"
    }
    # storage.objects.delete comes only with roles that also create; a custom role with
    # delete alone would be tighter, but a deleted custom role's id stays taken for weeks,
    # which would break switching compaction off and on again.
    deletes_wavs = {
      role        = "roles/storage.objectUser"
      title       = "recording-wavs-only"
      description = "Delete a recording's WAV once its compacted copy is verified."
      expression  = "resource.name.startsWith(\"${local.recordings_objects}recordings/\") && resource.name.endsWith(\".wav\")"
    }
  }
}

resource "google_service_account" "compactor" {
  count = local.compaction_enabled ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-compactor"
  display_name = "Omi receiver compaction (compact_recording)"

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "compactor" {
  for_each = local.compaction_enabled ? local.compaction_grants : {}

  bucket = google_storage_bucket.recordings.name
  role   = each.value.role
  member = "serviceAccount:${google_service_account.compactor[0].email}"

  condition {
    title       = each.value.title
    description = each.value.description
    expression  = each.value.expression
  }
}
