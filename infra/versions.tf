terraform {
  required_version = ">= 1.5, < 2.0"

  # State lives in a GCS bucket created once by hand (docs/deploy.md, "Bootstrap"):
  #   terraform init -backend-config=bucket=STATE_BUCKET -backend-config=prefix=omi-receiver
  backend "gcs" {}

  # Pinned to the releases whose schemas `make test` checks infra/ against
  # (tests/infra/provider_schema.py reads them from the cdktf-cdktf-provider-* packages in
  # requirements-dev.txt); patch releases do not change a schema.
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50.0, < 6.51.0"
    }
    # Only for google_project_service_identity, which the GA provider lacks (agents.tf).
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 6.50.0, < 6.51.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.7.2, < 3.8.0"
    }
    # time_sleep: the first apply's waits for IAM to take effect (agents.tf).
    time = {
      source  = "hashicorp/time"
      version = ">= 0.13.1, < 0.14.0"
    }
    # archive_file zips the functions' allow-listed files from `source` blocks (storage.tf, vad.tf).
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.7.1, < 2.8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  # Labels on every resource that takes them (alert policies' user_labels excepted, which
  # monitoring.tf sets by hand).
  default_labels = local.labels
}

provider "google-beta" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}
