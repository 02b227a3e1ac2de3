# ---------------------------------------------------------------------------------------
# Recordings bucket
#
# Object layout (the lifecycle rules below depend on it):
#   recordings/<uid>/<YYYY-MM-DD>/<start>.wav   the product; kept (see recordings_retention_days)
#   state/<uid>.json                            assembler state per user; small; kept
#   work/<uid>/<recording-id>/...               data, part and header objects of open
#                                               recordings; deleted by the assembler when it
#                                               finalizes the recording
#
# Soft delete and versioning are OFF on purpose. The assembler rewrites a recording's
# growing WAV by compose on every flush and deletes its intermediate work/ objects. With
# the default 7-day soft delete, or with versioning, every overwritten or deleted copy stays
# billable like live data: an hour-long recording rewritten every minute would keep ~60
# full copies, about 3.5 GB per user-hour at 16 kHz PCM16, instead of 115 MB.
# ---------------------------------------------------------------------------------------

resource "google_storage_bucket" "recordings" {
  #checkov:skip=CKV_GCP_78:Versioning is off on purpose: the assembler overwrites the growing WAV on every flush, so noncurrent versions would keep ~60 billable copies per recording-hour (see the comment above).
  #checkov:skip=CKV_GCP_62:No usage-log bucket: the bucket is private (public access prevention enforced, uniform access) and Cloud Audit Logs record access; usage logs would add a bucket and an object per hour of traffic.
  name     = local.recordings_bucket_name
  project  = var.project_id
  location = var.region

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # false: `terraform destroy` fails on this bucket while it holds recordings, so a
  # teardown keeps the data (docs/deploy.md, "Tear down").
  force_destroy = var.recordings_force_destroy

  soft_delete_policy {
    retention_duration_seconds = 0
  }

  versioning {
    enabled = false
  }

  # Storage class by use (var.recordings_autoclass): a finished recording is written once
  # and rarely read, so Autoclass moves it to Nearline after 30 days unread, Coldline after
  # 90 and Archive after 365 (per GB-month ~$0.020 -> 0.010 -> 0.004 -> 0.0012), and back to
  # Standard when someone reads it. Autoclass rather than SetStorageClass lifecycle rules:
  # it charges no retrieval fee ($0.01-0.05 per GB otherwise) and no early-deletion minimum
  # (30-365 days otherwise) when a recording is downloaded, erased or expired by
  # recordings_retention_days; objects under 128 KiB (state/, small work/ parts) stay
  # Standard and pay no management fee; the rest pays $0.0025 per 1,000 objects per month.
  # Autoclass forbids SetStorageClass lifecycle actions; the Delete and
  # AbortIncompleteMultipartUpload rules below are allowed. Always written, with enabled =
  # false when off: removing the block would leave Autoclass on, and the provider shows no
  # change for enabled = false on a bucket that never had it.
  autoclass {
    enabled                = var.recordings_autoclass
    terminal_storage_class = var.recordings_autoclass ? "ARCHIVE" : null
  }

  # Backstop only: the assembler deletes a recording's work/ objects within minutes of
  # finalizing it. This catches objects left by a recording that was never finalized.
  lifecycle_rule {
    condition {
      age            = var.work_objects_max_age_days
      matches_prefix = ["work/"]
    }
    action {
      type = "Delete"
    }
  }

  # Optional data retention for finished recordings. A lifecycle rule rather than a
  # bucket retention policy: a retention policy forbids deleting or overwriting young
  # objects, which is exactly what the assembler does while a recording grows.
  dynamic "lifecycle_rule" {
    for_each = var.recordings_retention_days == null ? [] : [var.recordings_retention_days]
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["recordings/"]
      }
      action {
        type = "Delete"
      }
    }
  }

  # A multipart upload that never completes is billed until aborted.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [
    google_project_service.apis,
    google_kms_crypto_key_iam_member.storage_agent_uses_cmek,
  ]
}

# With CMEK, Cloud Storage encrypts with the key as its own service agent.
data "google_storage_project_service_account" "this" {
  count   = var.kms_key_name == null ? 0 : 1
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "storage_agent_uses_cmek" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.this[0].email_address}"
}

# ---------------------------------------------------------------------------------------
# Function source of ingest, the assembler and compaction: an allow-list, zipped. The object
# name carries the zip's hash, so a code change uploads a new object and redeploys them.
# ---------------------------------------------------------------------------------------

locals {
  # What those functions are built from: main.py, the runtime's pins and the runtime
  # package, nothing else, so a new tool, test or doc can never ship by accident. Paths
  # relative to `dir`, as fileset() globs: `*` stays within a folder, `**/` spans any
  # number of them. tests/infra lists the zip this makes; tests/unit imports main from it.
  function_source = {
    dir = "${path.module}/.."
    files = [
      "main.py",
      "requirements.txt",
      "omi_receiver/__init__.py",
      "omi_receiver/runtime/**/*.py",
    ]
  }
}

# Built from `source` blocks: the provider writes them in name order without timestamps or
# modes, so the hash changes with the files' content only.
data "archive_file" "src" {
  type        = "zip"
  output_path = "${path.module}/.build/source.zip"

  dynamic "source" {
    for_each = toset(flatten([for glob in local.function_source.files : fileset(local.function_source.dir, glob)]))
    content {
      filename = source.value
      content  = file("${local.function_source.dir}/${source.value}")
    }
  }

  lifecycle {
    precondition {
      condition     = alltrue([for glob in local.function_source.files : length(fileset(local.function_source.dir, glob)) > 0])
      error_message = "An entry of local.function_source.files matches no file: a file was moved or renamed."
    }
  }
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:No usage-log bucket for a private bucket holding only deployment zips; Cloud Audit Logs record access.
  name     = local.source_bucket_name
  project  = var.project_id
  location = var.region

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  # The zips are small; versions make a bad deploy easy to inspect. Terraform deletes the
  # previous zip when the hash changes; its noncurrent version goes after 30 days.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_object" "source" {
  name         = "source-${data.archive_file.src.output_md5}.zip"
  bucket       = google_storage_bucket.source.name
  source       = data.archive_file.src.output_path
  content_type = "application/zip"
}
