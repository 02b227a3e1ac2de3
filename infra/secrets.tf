# ---------------------------------------------------------------------------------------
# Ingest token(s). The Omi app calls https://<ingest-url>/<token>; ingest accepts any token
# in INGEST_TOKENS, the comma-joined list stored here. Rotation without losing a chunk:
# add the new token to extra_ingest_tokens, apply, change the URL in the app, then make it
# ingest_token, empty extra_ingest_tokens and apply again
# (docs/deploy.md, "Rotating the ingest token").
#
# The token is in the Terraform state (random_password, the secret version): keep the state
# bucket private.
# ---------------------------------------------------------------------------------------

resource "random_password" "ingest_token" {
  length  = 40
  special = false # it goes into a URL path
}

locals {
  ingest_token  = coalesce(var.ingest_token, random_password.ingest_token.result)
  ingest_tokens = distinct(concat([local.ingest_token], var.extra_ingest_tokens))
}

resource "google_secret_manager_secret" "ingest_token" {
  secret_id = "${var.name_prefix}-ingest-token"
  project   = var.project_id

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "ingest_token" {
  secret      = google_secret_manager_secret.ingest_token.id
  secret_data = join(",", local.ingest_tokens)

  # A token change replaces the version: create the new one, point ingest at it (a new
  # revision), and only then destroy the old one, so no instance ever starts without a
  # readable version.
  lifecycle {
    create_before_destroy = true
  }
}
