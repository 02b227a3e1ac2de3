# ---------------------------------------------------------------------------------------
# Topics and subscriptions. omi_receiver/devtools/resources.py builds the same shape on the local
# emulator; the constants below match its ACK_DEADLINE_SECONDS, MAX_DELIVERY_ATTEMPTS and
# TICKS_TOPIC (tests/infra checks that).
# ---------------------------------------------------------------------------------------

locals {
  # > pass_seconds: a pass never loses its lease on a batch mid-flush; < lease_seconds
  # (functions.tf): a crashed pass's batch is redelivered while its users are still leased.
  ack_deadline_seconds = 120
  # A chunk delivered this many times without being acked goes to the dead-letter topic.
  # 10, not 5: besides real failures, a chunk is released (nacked) once when the settle
  # window holds it, and once per tick while its user's lease is held by a crashed pass
  # (up to lease_seconds, 150 s by default: two or three ticks). Those releases count as
  # deliveries; with 5 a healthy chunk of such a user could be dead-lettered.
  max_delivery_attempts = 10
  # How long a subscription keeps an unacked chunk (Pub/Sub's default; it allows up to 31
  # days). The erase markers' lifetime (ERASE_MARKER_KEEP_US, a fixed 22 days in the code)
  # must outlast three of these (chunk, hold, replayed chunk); tests/infra checks it does.
  seven_days = "604800s"

  ticks_topic = "assembler-ticks"

  # The chunk topics are google_pubsub_topic.chunks below, one per shard.
  topics = {
    dead_letter = var.dead_letter_topic
    ticks       = local.ticks_topic
    recordings  = var.recordings_topic
  }

  dead_letter_hold_subscription = "${var.dead_letter_topic}-hold"
}

resource "google_pubsub_topic" "this" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; messages live at most 7 days. CMEK is offered for the recordings bucket (var.kms_key_name), where audio is kept.
  for_each = local.topics

  name    = each.value
  project = var.project_id

  depends_on = [google_project_service.apis]
}

# The chunk topics and the assembler's work queues: one topic and one pull subscription per
# shard. Ingest publishes each chunk to the topic of its user's shard, crc32(uid) %
# assembler_shards, so all of a user's chunks land in one subscription, and each
# subscription is drained by one pass per tick (one Scheduler job per shard, scheduler.tf).
# With a single shard there is one topic named exactly var.chunks_topic and one
# subscription named exactly var.chunks_subscription; with more, <name>-<i>. The names
# match Config.shard_topic and Config.shard_subscription in omi_receiver/runtime/config.py.
#
# A topic per shard rather than filtered subscriptions on one topic: Pub/Sub bills the
# messages a filter drops as delivered (every chunk would be billed once per shard), and
# the emulator ignores filters. Here each chunk is published once and delivered once.
#
# A name cannot change in place: changing assembler_shards between 1 and more renames
# (replaces) topic 0 and subscription 0, and lowering it destroys topics and subscriptions
# i >= N, each subscription with its backlog. Drain them first (README).
resource "google_pubsub_topic" "chunks" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; messages live at most 7 days. CMEK is offered for the recordings bucket (var.kms_key_name), where audio is kept.
  count = local.assembler_shards

  name    = local.assembler_shards == 1 ? var.chunks_topic : "${var.chunks_topic}-${count.index}"
  project = var.project_id

  depends_on = [google_project_service.apis]
}

# Deployments from before the topic per shard held the one chunk topic in the map above;
# with one shard it keeps its name, so it stays as it is.
moved {
  from = google_pubsub_topic.this["chunks"]
  to   = google_pubsub_topic.chunks[0]
}

resource "google_pubsub_subscription" "chunks" {
  count = local.assembler_shards

  name    = local.assembler_shards == 1 ? var.chunks_subscription : "${var.chunks_subscription}-${count.index}"
  project = var.project_id
  # Subscription i on topic i, and no filter: the topic already holds only shard i's chunks.
  topic = google_pubsub_topic.chunks[count.index].id

  ack_deadline_seconds = local.ack_deadline_seconds
  # No message ordering (ingest publishes without ordering keys, so chunks of different
  # users can share a Publish RPC).
  # With ordering, Pub/Sub hands out a key's next messages only after the earlier ones are
  # acked, and one pull's <= 1000 messages are spread across keys: with many users a pass
  # got a few chunks per user per pull round and flushed each user many times per tick
  # (measured: 11.8 flushes per user per tick at 20 users, 1.2 Cloud Storage writes per
  # chunk). Without it one pass collects everything waiting in its shard and flushes each
  # user once. Order comes from received_at (the assembler sorts each batch), and the shard
  # plus the per-user lease keep a user with one pass at a time.
  enable_message_ordering    = false
  message_retention_duration = local.seven_days
  retain_acked_messages      = false

  # Never expires, however long the assembler is idle ("" is the API's "never").
  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this["dead_letter"].id
    max_delivery_attempts = local.max_delivery_attempts
  }
}

# Keeps dead-lettered messages (nothing consumes them automatically) for inspection and
# replay; the "dead letters" alert fires while it holds any.
resource "google_pubsub_subscription" "dead_letter_hold" {
  name    = local.dead_letter_hold_subscription
  project = var.project_id
  topic   = google_pubsub_topic.this["dead_letter"].id

  ack_deadline_seconds       = 600
  message_retention_duration = local.seven_days
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}

# Optional: an example pull subscription for a consumer of finished-recording events.
resource "google_pubsub_subscription" "recordings" {
  count = var.recordings_subscription_name == null ? 0 : 1

  name    = var.recordings_subscription_name
  project = var.project_id
  topic   = google_pubsub_topic.this["recordings"].id

  ack_deadline_seconds       = 60
  message_retention_duration = local.seven_days

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # An event its consumer keeps failing on goes to the same dead-letter topic (and so
  # shows in the hold subscription and its alert).
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.this["dead_letter"].id
    max_delivery_attempts = local.max_delivery_attempts
  }
}
