# ---------------------------------------------------------------------------------------
# Google's service agents, and the waits a brand-new project needs for its first apply to
# succeed without a re-run (docs/deploy.md, "The first apply in a new project").
#
# * The Pub/Sub and Eventarc service agents are created here, before anything grants them
#   a role: "If a service agent hasn't been created yet, then you can't grant roles to the
#   service agent" (cloud.google.com/iam/docs/create-service-agents). An agent created on
#   request gets none of its usual roles, so they are granted explicitly.
# * Eventarc triggers made right after the API is enabled can fail with "Permission denied
#   while using the Eventarc Service Agent" (terraform-provider-google issue 25294): the
#   functions with a trigger wait for the agents and their grants, plus a minute.
# * The first function build can start before the build account's grants are in effect
#   (issue 20571): the functions wait a minute after them, as the provider's own example
#   cloudfunctions2_basic_builder does.
#
# Later applies do not wait: a time_sleep waits once, when it is created.
# ---------------------------------------------------------------------------------------

resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.apis]
}

resource "google_project_service_identity" "eventarc" {
  provider = google-beta

  project = var.project_id
  service = "eventarc.googleapis.com"

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "service_agents" {
  #checkov:skip=CKV_GCP_49:These are Google's own service agents getting the service agent role of their own service (roles/pubsub.serviceAgent, roles/eventarc.serviceAgent), which an agent created on request lacks; no user or workload account gets it.
  for_each = {
    pubsub   = { role = "roles/pubsub.serviceAgent", email = google_project_service_identity.pubsub.email }
    eventarc = { role = "roles/eventarc.serviceAgent", email = google_project_service_identity.eventarc.email }
  }

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${each.value.email}"
}

resource "time_sleep" "service_agents" {
  create_duration = "60s"

  depends_on = [google_project_iam_member.service_agents]
}

resource "time_sleep" "build_grants" {
  create_duration = "60s"

  depends_on = [
    google_project_iam_member.this,
    google_project_iam_member.build_reads_staged_source,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_storage_bucket_iam_member.this,
  ]
}
