# ---------------------------------------------------------------------------------------
# Ticks: one job per shard. Each publishes one message per schedule slot to the ticks
# topic, and each message starts one assembler pass (functions.tf) on that shard's chunk
# subscription (pubsub.tf; one topic and subscription per shard): the message says which, { "shard": i, "shards": N }. The N
# passes of a tick run at once, each on its own users (crc32(uid) % N). Scheduler
# publishes as its own service agent: no service account needed.
# ---------------------------------------------------------------------------------------

resource "google_cloud_scheduler_job" "assembler_tick" {
  count = local.assembler_shards

  name        = "${var.name_prefix}-assembler-tick-${count.index}"
  project     = var.project_id
  region      = var.region
  description = "Starts the assembler pass of shard ${count.index} (of ${local.assembler_shards}) on every tick."
  schedule    = var.assembler_schedule
  time_zone   = "Etc/UTC"

  # A missed tick is not retried: the next one comes anyway.
  retry_config {
    retry_count = 0
  }

  pubsub_target {
    topic_name = google_pubsub_topic.this["ticks"].id
    data       = base64encode(jsonencode({ shard = count.index, shards = local.assembler_shards }))
  }

  depends_on = [google_project_service.apis]
}
