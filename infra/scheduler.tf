# ---------------------------------------------------------------------------------------
# Ticks: each job publishes one message per schedule slot to the ticks topic, and each
# message starts one assembler pass (functions.tf). N jobs give N concurrent passes; they
# share the one chunks subscription, and Pub/Sub ordering keeps each user with one pass at
# a time. Scheduler publishes as its own service agent: no service account needed.
# ---------------------------------------------------------------------------------------

resource "google_cloud_scheduler_job" "assembler_tick" {
  count = var.assembler_parallel_passes

  name        = "${var.name_prefix}-assembler-tick-${count.index}"
  project     = var.project_id
  region      = var.region
  description = "Starts assembler pass ${count.index + 1} of ${var.assembler_parallel_passes} on every tick."
  schedule    = var.assembler_schedule
  time_zone   = "Etc/UTC"

  # A missed tick is not retried: the next one comes anyway.
  retry_config {
    retry_count = 0
  }

  pubsub_target {
    topic_name = google_pubsub_topic.this["ticks"].id
    data       = base64encode(jsonencode({ pass = count.index, passes = var.assembler_parallel_passes }))
  }

  depends_on = [google_project_service.apis]
}
