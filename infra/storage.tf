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
  labels   = local.labels

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
# Function source: the repository root, zipped; the object name carries the zip's hash so
# that a code change uploads a new object and redeploys both functions.
# ---------------------------------------------------------------------------------------

data "archive_file" "src" {
  type             = "zip"
  source_dir       = "${path.module}/.."
  output_path      = "${path.module}/.build/source.zip"
  output_file_mode = "0644"

  # Only main.py, requirements.txt and omi_receiver/ are needed at run time; everything
  # else at the root is listed here (tests/infra checks the zip would hold nothing more).
  # Globs match relative paths (doublestar); a matched directory is skipped whole. No bare
  # ".*": it would also match the root itself (".") and leave an empty archive.
  excludes = [
    "**/*.pyc",
    "**/__pycache__",
    "*.egg-info",
    ".build",
    ".ci",
    ".coverage",
    ".gcloudignore",
    ".git",
    ".github",
    ".gitignore",
    ".hypothesis",
    ".local",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".venv*",
    "Makefile",
    "README.md",
    "bench",
    "cloudbuild.yaml",
    "docs",
    "examples",
    "htmlcov",
    "infra",
    "pyproject.toml",
    "pytest.ini",
    "requirements-*.txt",
    "samples",
    "tests",
  ]
}

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:No usage-log bucket for a private bucket holding only deployment zips; Cloud Audit Logs record access.
  name     = local.source_bucket_name
  project  = var.project_id
  location = var.region
  labels   = local.labels

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
