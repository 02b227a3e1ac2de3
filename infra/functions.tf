# ---------------------------------------------------------------------------------------
# The Cloud Functions (2nd gen), one resource for all of them: ingest and the assembler,
# built from the same source zip (storage.tf), and the optional VAD example consumer, built
# from its own (vad.tf). local.functions holds what differs between them; their sizing comes
# from var.deployment_size and its overrides (sizing.tf). Every setting the code reads
# (omi_receiver/runtime/config.py) is set from a variable of the same name (the sized ones
# through sizing.tf's locals); tests/infra checks that none is missing.
# ---------------------------------------------------------------------------------------

locals {
  # One instance per shard's pass, plus one for a pass that overruns into the next tick.
  assembler_max_instances = coalesce(var.assembler_max_instances, local.assembler_shards + 1)

  # Config's "shared" and "ingest" settings: ingest needs them, and the assembler reads them
  # too (publish_timeout_seconds bounds when a drain is complete). CHUNKS_TOPIC is a base
  # name: with ASSEMBLER_SHARDS > 1 ingest publishes a chunk to CHUNKS_TOPIC-<crc32(uid) %
  # ASSEMBLER_SHARDS>, as pubsub.tf names the shard topics. INGEST_TOKENS comes from Secret
  # Manager, to ingest only.
  pipeline_env = {
    GOOGLE_CLOUD_PROJECT    = var.project_id
    CHUNKS_TOPIC            = var.chunks_topic
    ASSEMBLER_SHARDS        = tostring(local.assembler_shards)
    MAX_CHUNK_BYTES         = tostring(var.max_chunk_bytes)
    BODY_READ_SECONDS       = tostring(var.body_read_seconds)
    ALLOWED_UIDS            = join(",", var.allowed_uids)
    PUBLISH_TIMEOUT_SECONDS = tostring(var.publish_timeout_seconds)
    RETRY_AFTER_SECONDS     = tostring(var.retry_after_seconds)
    LOG_ACCEPTED_CHUNKS     = tostring(var.log_accepted_chunks)
    CHUNK_ENCODING          = var.chunk_encoding
  }

  # Config's "assembler" settings. CHUNKS_SUBSCRIPTION is a base name: the pass for shard i
  # (from its tick message) pulls from CHUNKS_SUBSCRIPTION-i, as pubsub.tf names them.
  assembler_env = {
    RECORDINGS_BUCKET     = google_storage_bucket.recordings.name
    CHUNKS_SUBSCRIPTION   = var.chunks_subscription
    DEAD_LETTER_TOPIC     = google_pubsub_topic.this["dead_letter"].name
    RECORDINGS_TOPIC      = google_pubsub_topic.this["recordings"].name
    SESSION_GAP_SECONDS   = tostring(var.session_gap_seconds)
    MAX_RECORDING_SECONDS = tostring(var.max_recording_seconds)
    SETTLE_SECONDS        = tostring(var.settle_seconds)
    DEDUP_WINDOW_SECONDS  = tostring(var.dedup_window_seconds)
    PASS_SECONDS          = tostring(var.pass_seconds)
    LEASE_SECONDS         = tostring(var.lease_seconds)
    ACK_DEADLINE_SECONDS  = tostring(local.ack_deadline_seconds)
    MAX_MESSAGES_PER_PULL = tostring(var.max_messages_per_pull)
    MAX_PASS_BYTES        = tostring(local.max_pass_bytes)
    FLUSH_WORKERS         = tostring(local.flush_workers)
  }

  # What differs between the functions. Every entry has the same attributes, so the map has
  # one type; a function without a trigger has trigger_topic = null.
  all_functions = {
    # receive_chunk: the URL pasted in the Omi app. Public by design (allUsers may invoke
    # it, iam.tf): the token in the path is the access control.
    ingest = {
      description     = "Omi receiver ingest: accepts an audio chunk (POST /<token>) and publishes it to Pub/Sub."
      entry_point     = "receive_chunk"
      source_object   = google_storage_bucket_object.source.name
      memory          = local.sizing.ingest.memory
      cpu             = local.sizing.ingest.cpu
      concurrency     = local.sizing.ingest.concurrency
      timeout_seconds = var.ingest_timeout_seconds
      min_instances   = local.sizing.ingest.min_instances
      max_instances   = local.sizing.ingest.max_instances
      ingress         = "ALLOW_ALL"
      service_account = google_service_account.this["ingest"].email
      env             = local.pipeline_env
      reads_token     = true
      trigger_topic   = null
      trigger_retry   = null
    }
    # assemble_recordings: one pass per shard per tick. Cloud Scheduler publishes one tick
    # per shard to the ticks topic (scheduler.tf); Eventarc delivers each here, once (no
    # retry: the next tick comes anyway). Internal ingress is enough: Eventarc's Pub/Sub
    # push counts as internal traffic.
    assembler = {
      description     = "Omi receiver assembler: on each tick, pulls chunks and writes one WAV per recording to Cloud Storage."
      entry_point     = "assemble_recordings"
      source_object   = google_storage_bucket_object.source.name
      memory          = local.sizing.assembler.memory
      cpu             = local.sizing.assembler.cpu
      concurrency     = local.sizing.assembler.concurrency
      timeout_seconds = var.assembler_timeout_seconds
      min_instances   = local.sizing.assembler.min_instances
      max_instances   = local.assembler_max_instances
      ingress         = "ALLOW_INTERNAL_ONLY"
      service_account = google_service_account.this["assembler"].email
      env             = merge(local.pipeline_env, local.assembler_env)
      reads_token     = false
      trigger_topic   = google_pubsub_topic.this["ticks"].id
      trigger_retry   = "RETRY_POLICY_DO_NOT_RETRY"
    }
    # analyze_recording (vad.tf): events come at least once and sometimes repeated; the
    # consumer is idempotent (one sidecar per WAV generation) and acknowledges what can
    # never succeed, so retrying every failure only retries what can heal.
    vad = {
      description     = "Omi receiver example consumer: voice activity detection on each finished recording, written as a .vad.json sidecar."
      entry_point     = "analyze_recording"
      source_object   = one(google_storage_bucket_object.vad_source[*].name)
      memory          = local.vad_memory
      cpu             = local.vad_cpu
      concurrency     = 1
      timeout_seconds = local.vad_timeout_seconds
      min_instances   = 0
      max_instances   = local.vad_max_instances
      ingress         = "ALLOW_INTERNAL_ONLY"
      service_account = one(google_service_account.vad[*].email)
      # Its one setting (vad_consumer.Settings in examples/vad/); the bucket and object
      # come with each event.
      env           = { VAD_AGGRESSIVENESS = tostring(var.vad_aggressiveness) }
      reads_token   = false
      trigger_topic = google_pubsub_topic.this["recordings"].id
      trigger_retry = "RETRY_POLICY_RETRY"
    }
    # compact_recording (compaction.tf): idempotent per WAV generation; a failed check keeps
    # the WAV and is acknowledged, so retries only repeat what can heal (a WAV rewritten
    # meanwhile, storage errors).
    compactor = {
      description     = "Omi receiver compaction: replaces each finished recording's WAV by a verified FLAC or Opus copy."
      entry_point     = "compact_recording"
      source_object   = google_storage_bucket_object.source.name
      memory          = local.compaction_memory
      cpu             = local.compaction_cpu
      concurrency     = 1
      timeout_seconds = local.compaction_timeout_seconds
      min_instances   = 0
      max_instances   = local.compaction_max_instances
      ingress         = "ALLOW_INTERNAL_ONLY"
      service_account = one(google_service_account.compactor[*].email)
      # Its one setting (runtime/compaction/settings.py); the bucket and object come with
      # each event.
      env           = { COMPACTION_FORMAT = var.recordings_compaction }
      reads_token   = false
      trigger_topic = google_pubsub_topic.this["recordings"].id
      trigger_retry = "RETRY_POLICY_RETRY"
    }
  }
  functions = {
    for name, fn in local.all_functions : name => fn
    if(name != "vad" || var.vad_consumer_enabled) && (name != "compactor" || local.compaction_enabled)
  }

  # Memory in MiB and CPU as a number, for the checks against Cloud Run's limits below (the
  # variables' validations allow only <n>Mi and <n>Gi, and plain or fractional numbers).
  function_memory_mib    = { for name, fn in local.functions : name => tonumber(regex("^[0-9]+", fn.memory)) * (endswith(fn.memory, "Gi") ? 1024 : 1) }
  function_cpu           = { for name, fn in local.functions : name => tonumber(fn.cpu) }
  assembler_memory_bytes = local.function_memory_mib["assembler"] * 1048576
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

resource "google_cloudfunctions2_function" "this" {
  #checkov:skip=CKV_GCP_124:Only ingest allows all ingress, by design: it is the public webhook the Omi app calls from the internet, and the secret token in the URL path is the access control. The others are internal only.
  for_each = local.functions

  name        = local.function_names[each.key]
  project     = var.project_id
  location    = var.region
  description = each.value.description

  build_config {
    runtime           = local.runtime
    entry_point       = each.value.entry_point
    service_account   = google_service_account.this["build"].id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = each.value.source_object
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    max_instance_request_concurrency = each.value.concurrency
    timeout_seconds                  = each.value.timeout_seconds
    min_instance_count               = each.value.min_instances
    max_instance_count               = each.value.max_instances
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = each.value.service_account
    environment_variables            = each.value.env

    # Pinned to the version Terraform wrote, not "latest": Cloud Run reads a secret env var
    # when an instance starts, and an ingest instance that keeps serving a steady stream can
    # live for hours. A token change must therefore roll a new revision, or a warm instance
    # would keep refusing a newly added token (and the app would lose chunks to 401s).
    dynamic "secret_environment_variables" {
      for_each = each.value.reads_token ? [google_secret_manager_secret_version.ingest_token.version] : []
      content {
        key        = "INGEST_TOKENS"
        project_id = var.project_id
        secret     = google_secret_manager_secret.ingest_token.secret_id
        version    = secret_environment_variables.value
      }
    }
  }

  dynamic "event_trigger" {
    for_each = each.value.trigger_topic == null ? [] : [each.value]
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = event_trigger.value.trigger_topic
      retry_policy          = event_trigger.value.trigger_retry
      service_account_email = google_service_account.this["trigger"].email
    }
  }

  lifecycle {
    # What Cloud Run refuses at apply time, refused at plan time instead (its CPU and memory
    # limits: cloud.google.com/run/docs/configuring/services/cpu and .../memory-limits).
    precondition {
      condition     = local.function_cpu[each.key] >= 0.08 && local.function_cpu[each.key] <= 8 && (local.function_cpu[each.key] < 1 || floor(local.function_cpu[each.key]) == local.function_cpu[each.key])
      error_message = "${each.key}: CPU must be a fraction from 0.08 to 1, or a whole number of vCPUs up to 8."
    }
    precondition {
      condition     = each.value.concurrency == 1 || local.function_cpu[each.key] >= 1
      error_message = "${each.key}: a concurrency above 1 needs at least 1 vCPU (Cloud Run)."
    }
    precondition {
      condition = local.function_memory_mib[each.key] <= (
        local.function_cpu[each.key] < 0.5 ? 512 : local.function_cpu[each.key] < 1 ? 1024 : local.function_cpu[each.key] <= 1 ? 4096 :
        local.function_cpu[each.key] <= 2 ? 8192 : local.function_cpu[each.key] <= 4 ? 16384 : local.function_cpu[each.key] <= 6 ? 24576 : 32768
      )
      error_message = "${each.key}: too much memory for its CPU (Cloud Run: up to 512 MiB below 0.5 vCPU, 1 GiB below 1, 4 GiB at 1, 8 GiB at 2, 16 GiB at 4, 24 GiB at 6, 32 GiB at 8)."
    }
    precondition {
      condition     = local.function_memory_mib[each.key] >= (local.function_cpu[each.key] >= 6 ? 4096 : local.function_cpu[each.key] >= 4 ? 2048 : 128)
      error_message = "${each.key}: too little memory for its CPU (Cloud Run: at least 2 GiB at 4 vCPU, 4 GiB at 6 or 8) or below 128 MiB."
    }

    # compaction: libopus takes ~215 CPU s per audio hour; an event function stops at 540 s.
    precondition {
      condition     = each.key != "compactor" || var.recordings_compaction != "opus" || var.max_recording_seconds <= 7200
      error_message = "recordings_compaction = \"opus\" needs max_recording_seconds <= 7200: encoding a longer recording would outlast the function's ${local.compaction_timeout_seconds} s."
    }

    # ingest
    precondition {
      condition     = each.key != "ingest" || var.ingest_timeout_seconds > var.body_read_seconds + var.publish_timeout_seconds
      error_message = "ingest_timeout_seconds must exceed body_read_seconds + publish_timeout_seconds, or a slow body or publish is cut off before ingest can answer 408 or 503."
    }

    # the assembler
    precondition {
      condition     = each.key != "assembler" || var.assembler_timeout_seconds > var.pass_seconds
      error_message = "assembler_timeout_seconds must exceed pass_seconds, with room for the finalization work after a pass."
    }
    precondition {
      condition     = each.key != "assembler" || var.lease_seconds > var.pass_seconds
      error_message = "lease_seconds must exceed pass_seconds (the assembler refuses to start otherwise)."
    }
    # Without ordering, a crashed pass's batch comes back after the ack deadline, maybe to
    # another pass. Its users must still be leased until then, or that pass could commit a
    # user's newer chunks first and turn the redelivered ones into late recordings.
    precondition {
      condition     = each.key != "assembler" || var.lease_seconds > local.ack_deadline_seconds
      error_message = "lease_seconds must exceed the chunks subscriptions' 120 s ack deadline, so a crashed pass's users stay leased until its batch is redelivered."
    }
    precondition {
      condition     = each.key != "assembler" || var.pass_seconds < local.ack_deadline_seconds
      error_message = "pass_seconds must be below the chunks subscription's ack deadline."
    }
    # Every tick starts one pass per shard at once; each needs an instance slot.
    precondition {
      condition     = each.key != "assembler" || local.assembler_max_instances * local.sizing.assembler.concurrency >= local.assembler_shards
      error_message = "assembler_max_instances (times assembler_concurrency) must be at least assembler_shards: every tick starts one pass per shard."
    }
    # A pass holds up to max_pass_bytes of audio, plus the Python objects around it and the
    # copy a flush uploads: keep it to half the instance's memory, per concurrent pass.
    precondition {
      condition     = each.key != "assembler" || local.max_pass_bytes * local.sizing.assembler.concurrency <= local.assembler_memory_bytes / 2
      error_message = "max_pass_bytes (times assembler_concurrency) must be at most half of assembler_memory: raise assembler_memory or lower max_pass_bytes."
    }
  }

  # One list for all: depends_on cannot differ between instances, and waiting for a grant
  # only one function needs costs the others nothing after the first apply.
  depends_on = [
    google_project_service.apis,
    # First apply in a new project: the build account's grants and the service agents have
    # had time to take effect (agents.tf). Through build_grants they also wait for what it waits
    # for: google_project_iam_member.this, google_storage_bucket_iam_member.this and the build
    # account's staging and registry grants.
    time_sleep.build_grants,
    time_sleep.service_agents,
    google_secret_manager_secret_iam_member.ingest_reads_token,
    google_storage_bucket_iam_member.vad,
    google_storage_bucket_iam_member.compactor,
    # CHUNKS_TOPIC and CHUNKS_SUBSCRIPTION are base names, not references: wait for the
    # topics, subscriptions and their grants.
    google_pubsub_topic.chunks,
    google_pubsub_topic_iam_member.ingest_publishes_chunks,
    google_pubsub_topic_iam_member.this,
    google_pubsub_subscription_iam_member.this,
    google_pubsub_subscription_iam_member.assembler_pulls_chunks,
    google_pubsub_subscription_iam_member.pubsub_agent_acks_chunks,
    google_service_account_iam_member.pubsub_agent_signs_for_trigger,
  ]
}

# Deployments made before the functions shared one resource held them under these names.
moved {
  from = google_cloudfunctions2_function.ingest
  to   = google_cloudfunctions2_function.this["ingest"]
}

moved {
  from = google_cloudfunctions2_function.assembler
  to   = google_cloudfunctions2_function.this["assembler"]
}

moved {
  from = google_cloudfunctions2_function.vad[0]
  to   = google_cloudfunctions2_function.this["vad"]
}
