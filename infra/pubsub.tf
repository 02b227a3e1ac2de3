# ---------------------------------------------------------------------------------------
# Topics and subscriptions. omi_receiver/resources.py builds the same shape on the local
# emulator; the constants below match its ACK_DEADLINE_SECONDS, MAX_DELIVERY_ATTEMPTS and
# TICKS_TOPIC (tests/infra checks that).
# ---------------------------------------------------------------------------------------

locals {
  # > pass_seconds: a pass never loses its lease on a batch mid-flush.
  ack_deadline_seconds = 120
  # A chunk the assembler fails on this many times goes to the dead-letter topic.
  max_delivery_attempts = 5
  # Pub/Sub's maximum for a subscription's backlog.
  seven_days = "604800s"

  ticks_topic = "assembler-ticks"

  topics = {
    chunks      = var.chunks_topic
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
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

# The assembler's work queue. Ordering (key = uid) hands each user's chunks to one pass at
# a time, in publish order, so parallel passes never interleave a user's audio.
resource "google_pubsub_subscription" "chunks" {
  name    = var.chunks_subscription
  project = var.project_id
  topic   = google_pubsub_topic.this["chunks"].id
  labels  = local.labels

  ack_deadline_seconds       = local.ack_deadline_seconds
  enable_message_ordering    = true
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
  labels  = local.labels

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
  labels  = local.labels

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
