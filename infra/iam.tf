# ---------------------------------------------------------------------------------------
# Identities: one service account per function (ingest and the assembler here; the optional
# VAD consumer's in vad.tf), one for the Eventarc triggers, one for the builds of all three
# functions. Nothing runs as the default compute or Cloud Build account. Every grant is on
# the narrowest resource that works.
# ---------------------------------------------------------------------------------------

locals {
  service_accounts = {
    ingest    = "Omi receiver ingest (receive_chunk)"
    assembler = "Omi receiver assembler (assemble_recordings)"
    trigger   = "Omi receiver Eventarc triggers: invoke the assembler (and the optional VAD consumer)"
    build     = "Omi receiver Cloud Build: builds the functions"
  }

  members = { for k, sa in google_service_account.this : k => "serviceAccount:${sa.email}" }
}

resource "google_service_account" "this" {
  for_each = local.service_accounts

  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = each.value

  depends_on = [google_project_service.apis]
}

# --- Pub/Sub --------------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "this" {
  for_each = {
    assembler_publishes_recordings = { topic = "recordings", member = local.members["assembler"] }
    assembler_dead_letters         = { topic = "dead_letter", member = local.members["assembler"] }
    # The Pub/Sub service agent forwards undeliverable messages to the dead-letter topic.
    pubsub_agent_dead_letters = { topic = "dead_letter", member = "serviceAccount:${local.pubsub_service_agent}" }
  }

  project = var.project_id
  topic   = google_pubsub_topic.this[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = each.value.member
}

# Ingest publishes to every shard's chunk topic (pubsub.tf) and to nothing else. Counted
# like the topics, so every shard gets the grant. A topic's IAM policy is deleted with it;
# should a topic be replaced under the same name, replace_triggered_by rewrites the grant
# (a renamed topic replaces it anyway, through its topic argument).
resource "google_pubsub_topic_iam_member" "ingest_publishes_chunks" {
  count = local.assembler_shards

  project = var.project_id
  topic   = google_pubsub_topic.chunks[count.index].name
  role    = "roles/pubsub.publisher"
  member  = local.members["ingest"]

  lifecycle {
    replace_triggered_by = [google_pubsub_topic.chunks[count.index].id]
  }
}

# Deployments from before the topic per shard held this grant in the map above.
moved {
  from = google_pubsub_topic_iam_member.this["ingest_publishes_chunks"]
  to   = google_pubsub_topic_iam_member.ingest_publishes_chunks[0]
}

resource "google_pubsub_subscription_iam_member" "this" {
  for_each = var.recordings_subscription_name == null ? {} : {
    pubsub_agent_acks_recordings = { subscription = google_pubsub_subscription.recordings[0].name, member = "serviceAccount:${local.pubsub_service_agent}" }
  }

  project      = var.project_id
  subscription = each.value.subscription
  role         = "roles/pubsub.subscriber"
  member       = each.value.member
}

# The chunk subscriptions, one per shard (pubsub.tf): the assembler pulls from each, and
# the service agent must be able to ack what it moves to the dead-letter topic. Counted
# like the subscriptions, so every shard gets both grants.
#
# A subscription's IAM policy is deleted with it. When Terraform replaces a subscription
# under the same name (as the upgrade that switched message ordering off does: ordering
# cannot change in place), these grants would stay in the state but be missing on the new
# subscription; replace_triggered_by rewrites them. The same happens to every shard's
# subscription of a deployment made with filtered subscriptions on one topic: each moves
# to its own topic, and the topic cannot change in place either. The id reads as unknown
# only when the subscription is replaced, not on an in-place update, so that is the only
# time it fires.
resource "google_pubsub_subscription_iam_member" "assembler_pulls_chunks" {
  count = local.assembler_shards

  project      = var.project_id
  subscription = google_pubsub_subscription.chunks[count.index].name
  role         = "roles/pubsub.subscriber"
  member       = local.members["assembler"]

  lifecycle {
    replace_triggered_by = [google_pubsub_subscription.chunks[count.index].id]
  }
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_acks_chunks" {
  count = local.assembler_shards

  project      = var.project_id
  subscription = google_pubsub_subscription.chunks[count.index].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_service_agent}"

  lifecycle {
    replace_triggered_by = [google_pubsub_subscription.chunks[count.index].id]
  }
}

# Deployments from before sharding held these two grants in the map above.
moved {
  from = google_pubsub_subscription_iam_member.this["assembler_pulls_chunks"]
  to   = google_pubsub_subscription_iam_member.assembler_pulls_chunks[0]
}

moved {
  from = google_pubsub_subscription_iam_member.this["pubsub_agent_acks_chunks"]
  to   = google_pubsub_subscription_iam_member.pubsub_agent_acks_chunks[0]
}

# --- Cloud Storage --------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "this" {
  for_each = {
    # Read, write, compose and delete objects in the recordings bucket; nothing else.
    assembler_writes_recordings = { bucket = google_storage_bucket.recordings.name, role = "roles/storage.objectAdmin", member = local.members["assembler"] }
    build_reads_source          = { bucket = google_storage_bucket.source.name, role = "roles/storage.objectViewer", member = local.members["build"] }
  }

  bucket = each.value.bucket
  role   = each.value.role
  member = each.value.member
}

# Cloud Functions copies the source zip into its own staging bucket
# (gcf-v2-sources-<project-number>-<region>) and the build reads it from there. That bucket
# is not ours to manage, so the grant is project-wide, narrowed by a condition to it.
resource "google_project_iam_member" "build_reads_staged_source" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = local.members["build"]

  condition {
    title       = "gcf-staged-source-only"
    description = "Only the Cloud Functions source staging bucket of this region."
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\")"
  }
}

# --- Project-level roles (no narrower resource exists) --------------------------------

# The trigger account needs no roles/eventarc.eventReceiver: Eventarc asks for it only for
# events other than direct Pub/Sub messages, which are all this deployment uses.
resource "google_project_iam_member" "this" {
  for_each = {
    build_writes_logs = { role = "roles/logging.logWriter", member = local.members["build"] }
  }

  project = var.project_id
  role    = each.value.role
  member  = each.value.member
}

# --- Artifact Registry, Secret Manager ------------------------------------------------

resource "google_artifact_registry_repository_iam_member" "build_pushes_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = local.members["build"]
}

resource "google_secret_manager_secret_iam_member" "ingest_reads_token" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.ingest_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.members["ingest"]
}

# --- Invoking the functions (their Cloud Run services) --------------------------------

# The webhook is public by design: the Omi app cannot authenticate to Google, so the token
# in the URL path is the access control (checked by the function on every request).
resource "google_cloud_run_service_iam_member" "ingest_public" {
  #checkov:skip=CKV_GCP_102:Public webhook by design: the Omi app sends no Google credentials; every request must carry a secret token in its path, checked by the function.
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.this["ingest"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Eventarc delivers to every function with a trigger (the assembler, and the VAD consumer
# and the compactor when enabled) as the trigger account.
resource "google_cloud_run_service_iam_member" "trigger_invokes" {
  for_each = { for name, fn in local.functions : name => fn if fn.trigger_topic != null }

  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.this[each.key].name
  role     = "roles/run.invoker"
  member   = local.members["trigger"]
}

moved {
  from = google_cloud_run_service_iam_member.trigger_invokes_assembler
  to   = google_cloud_run_service_iam_member.trigger_invokes["assembler"]
}

moved {
  from = google_cloud_run_service_iam_member.trigger_invokes_vad[0]
  to   = google_cloud_run_service_iam_member.trigger_invokes["vad"]
}

# Eventarc's push subscription authenticates as the trigger account; the Pub/Sub service
# agent mints those tokens. Granted automatically in projects created after April 2021;
# explicit here, and only on this one account, so older projects work too.
resource "google_service_account_iam_member" "pubsub_agent_signs_for_trigger" {
  service_account_id = google_service_account.this["trigger"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.pubsub_service_agent}"
}
