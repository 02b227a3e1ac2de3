# ---------------------------------------------------------------------------------------
# The pipeline's two Cloud Functions (2nd gen), ingest and the assembler, built from the
# same source zip (storage.tf). The third, the optional VAD example consumer, is in vad.tf
# with a source of its own. Every setting the code reads (omi_receiver/runtime/config.py) is
# set here from a variable of the same name; tests/infra checks that none is missing.
# ---------------------------------------------------------------------------------------

locals {
  # One instance per shard's pass, plus one for a pass that overruns into the next tick.
  assembler_max_instances = coalesce(var.assembler_max_instances, var.assembler_shards + 1)

  # assembler_memory in bytes (the variable's validation allows only <n>Mi and <n>Gi).
  assembler_memory_bytes = tonumber(regex("^[0-9]+", var.assembler_memory)) * (endswith(var.assembler_memory, "Gi") ? 1073741824 : 1048576)
}

# Images built for the functions; a cleanup policy keeps the repository from growing by one
# image per deploy forever.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption: the repository holds only the functions' container images, built from this public source; no user data.
  repository_id = "${var.name_prefix}-functions"
  project       = var.project_id
  location      = var.region
  format        = "DOCKER"
  description   = "Container images of the Omi receiver's Cloud Functions."
  labels        = local.labels

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.apis]
}

# receive_chunk: the URL pasted in the Omi app. Public by design (allUsers may invoke it,
# iam.tf): the token in the path is the access control.
resource "google_cloudfunctions2_function" "ingest" {
  #checkov:skip=CKV_GCP_124:Public webhook by design: the Omi app calls it from phones on the internet; the secret token in the URL path is the access control.
  name        = local.ingest_function_name
  project     = var.project_id
  location    = var.region
  description = "Omi receiver ingest: accepts an audio chunk (POST /<token>) and publishes it to Pub/Sub."
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = "receive_chunk"
    service_account   = google_service_account.this["build"].id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.ingest_memory
    available_cpu                    = var.ingest_cpu
    max_instance_request_concurrency = var.ingest_concurrency
    timeout_seconds                  = var.ingest_timeout_seconds
    min_instance_count               = var.ingest_min_instances
    max_instance_count               = var.ingest_max_instances
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.this["ingest"].email

    environment_variables = {
      GOOGLE_CLOUD_PROJECT = var.project_id
      # The base name: with ASSEMBLER_SHARDS > 1 ingest publishes a chunk to
      # CHUNKS_TOPIC-<crc32(uid) % ASSEMBLER_SHARDS>, as pubsub.tf names the shard topics.
      CHUNKS_TOPIC            = var.chunks_topic
      ASSEMBLER_SHARDS        = tostring(var.assembler_shards)
      MAX_CHUNK_BYTES         = tostring(var.max_chunk_bytes)
      BODY_READ_SECONDS       = tostring(var.body_read_seconds)
      ALLOWED_UIDS            = join(",", var.allowed_uids)
      PUBLISH_TIMEOUT_SECONDS = tostring(var.publish_timeout_seconds)
      RETRY_AFTER_SECONDS     = tostring(var.retry_after_seconds)
      LOG_ACCEPTED_CHUNKS     = tostring(var.log_accepted_chunks)
    }

    # Pinned to the version Terraform wrote, not "latest": Cloud Run reads a secret env var
    # when an instance starts, and an ingest instance that keeps serving a steady stream can
    # live for hours. A token change must therefore roll a new revision, or a warm instance
    # would keep refusing a newly added token (and the app would lose chunks to 401s).
    secret_environment_variables {
      key        = "INGEST_TOKENS"
      project_id = var.project_id
      secret     = google_secret_manager_secret.ingest_token.secret_id
      version    = google_secret_manager_secret_version.ingest_token.version
    }
  }

  lifecycle {
    precondition {
      condition     = var.ingest_concurrency == 1 || tonumber(var.ingest_cpu) >= 1
      error_message = "ingest_concurrency above 1 needs ingest_cpu of at least 1 (a Cloud Run limit)."
    }
    precondition {
      condition     = var.ingest_timeout_seconds > var.body_read_seconds + var.publish_timeout_seconds
      error_message = "ingest_timeout_seconds must exceed body_read_seconds + publish_timeout_seconds, or a slow body or publish is cut off before ingest can answer 408 or 503."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_secret_manager_secret_iam_member.ingest_reads_token,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.this,
    google_project_iam_member.build_reads_staged_source,
    google_storage_bucket_iam_member.this,
    # CHUNKS_TOPIC is a base name, not a reference: wait for the topics and the grant.
    google_pubsub_topic.chunks,
    google_pubsub_topic_iam_member.ingest_publishes_chunks,
  ]
}

# assemble_recordings: one pass per shard per tick. Cloud Scheduler publishes one tick per
# shard to the ticks topic (scheduler.tf); Eventarc delivers each here, once (no retry: the
# next tick comes anyway). Internal ingress is enough: Eventarc's Pub/Sub push counts as internal traffic.
resource "google_cloudfunctions2_function" "assembler" {
  name        = local.assembler_function_name
  project     = var.project_id
  location    = var.region
  description = "Omi receiver assembler: on each tick, pulls chunks and writes one WAV per recording to Cloud Storage."
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = "assemble_recordings"
    service_account   = google_service_account.this["build"].id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.assembler_memory
    available_cpu                    = var.assembler_cpu
    max_instance_request_concurrency = var.assembler_concurrency
    timeout_seconds                  = var.assembler_timeout_seconds
    min_instance_count               = var.assembler_min_instances
    max_instance_count               = local.assembler_max_instances
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.this["assembler"].email

    # Every Config field but INGEST_TOKENS, which only ingest gets. CHUNKS_TOPIC and
    # CHUNKS_SUBSCRIPTION are base names: with ASSEMBLER_SHARDS > 1 the pass for shard i
    # (from its tick message) pulls from CHUNKS_SUBSCRIPTION-i, as pubsub.tf names them.
    environment_variables = {
      GOOGLE_CLOUD_PROJECT    = var.project_id
      CHUNKS_TOPIC            = var.chunks_topic
      ASSEMBLER_SHARDS        = tostring(var.assembler_shards)
      MAX_CHUNK_BYTES         = tostring(var.max_chunk_bytes)
      BODY_READ_SECONDS       = tostring(var.body_read_seconds)
      ALLOWED_UIDS            = join(",", var.allowed_uids)
      PUBLISH_TIMEOUT_SECONDS = tostring(var.publish_timeout_seconds)
      RETRY_AFTER_SECONDS     = tostring(var.retry_after_seconds)
      LOG_ACCEPTED_CHUNKS     = tostring(var.log_accepted_chunks)
      RECORDINGS_BUCKET       = google_storage_bucket.recordings.name
      CHUNKS_SUBSCRIPTION     = var.chunks_subscription
      DEAD_LETTER_TOPIC       = google_pubsub_topic.this["dead_letter"].name
      RECORDINGS_TOPIC        = google_pubsub_topic.this["recordings"].name
      SESSION_GAP_SECONDS     = tostring(var.session_gap_seconds)
      MAX_RECORDING_SECONDS   = tostring(var.max_recording_seconds)
      SETTLE_SECONDS          = tostring(var.settle_seconds)
      DEDUP_WINDOW_SECONDS    = tostring(var.dedup_window_seconds)
      PASS_SECONDS            = tostring(var.pass_seconds)
      LEASE_SECONDS           = tostring(var.lease_seconds)
      ACK_DEADLINE_SECONDS    = tostring(local.ack_deadline_seconds)
      MAX_MESSAGES_PER_PULL   = tostring(var.max_messages_per_pull)
      MAX_PASS_BYTES          = tostring(var.max_pass_bytes)
      FLUSH_WORKERS           = tostring(var.flush_workers)
    }
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.this["ticks"].id
    retry_policy          = "RETRY_POLICY_DO_NOT_RETRY"
    service_account_email = google_service_account.this["trigger"].email
  }

  lifecycle {
    precondition {
      condition     = var.assembler_timeout_seconds > var.pass_seconds
      error_message = "assembler_timeout_seconds must exceed pass_seconds, with room for the finalization work after a pass."
    }
    precondition {
      condition     = var.lease_seconds > var.pass_seconds
      error_message = "lease_seconds must exceed pass_seconds (the assembler refuses to start otherwise)."
    }
    # Without ordering, a crashed pass's batch comes back after the ack deadline, maybe to
    # another pass. Its users must still be leased until then, or that pass could commit a
    # user's newer chunks first and turn the redelivered ones into late recordings.
    precondition {
      condition     = var.lease_seconds > local.ack_deadline_seconds
      error_message = "lease_seconds must exceed the chunks subscriptions' 120 s ack deadline, so a crashed pass's users stay leased until its batch is redelivered."
    }
    precondition {
      condition     = var.pass_seconds < local.ack_deadline_seconds
      error_message = "pass_seconds must be below the chunks subscription's ack deadline."
    }
    precondition {
      condition     = var.assembler_concurrency == 1 || tonumber(var.assembler_cpu) >= 1
      error_message = "assembler_concurrency above 1 needs assembler_cpu of at least 1 (a Cloud Run limit)."
    }
    # Every tick starts one pass per shard at once; each needs an instance slot.
    precondition {
      condition     = local.assembler_max_instances * var.assembler_concurrency >= var.assembler_shards
      error_message = "assembler_max_instances (times assembler_concurrency) must be at least assembler_shards: every tick starts one pass per shard."
    }
    # A pass holds up to max_pass_bytes of audio, plus the Python objects around it and the
    # copy a flush uploads: keep it to half the instance's memory, per concurrent pass.
    precondition {
      condition     = var.max_pass_bytes * var.assembler_concurrency <= local.assembler_memory_bytes / 2
      error_message = "max_pass_bytes (times assembler_concurrency) must be at most half of assembler_memory: raise assembler_memory or lower max_pass_bytes."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.this,
    google_project_iam_member.build_reads_staged_source,
    google_storage_bucket_iam_member.this,
    google_pubsub_subscription_iam_member.this,
    google_pubsub_subscription_iam_member.assembler_pulls_chunks,
    google_pubsub_subscription_iam_member.pubsub_agent_acks_chunks,
    google_pubsub_topic_iam_member.this,
    google_service_account_iam_member.pubsub_agent_signs_for_trigger,
  ]
}
