terraform {
  required_version = ">= 1.5, < 2.0"

  # State lives in a GCS bucket created once by hand (docs/deploy.md):
  #   terraform init -backend-config=bucket=STATE_BUCKET -backend-config=prefix=omi-receiver
  backend "gcs" {}

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.6, < 4.0"
    }
    # 2.5 added glob patterns to archive_file's `excludes`.
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.5, < 3.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
