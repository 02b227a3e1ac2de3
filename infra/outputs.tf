output "webhook_url" {
  description = "URL to paste in the Omi app (real-time audio webhook): the ingest URL with the primary token in its path. Secret: `terraform output -raw webhook_url`."
  value       = "${google_cloudfunctions2_function.this["ingest"].service_config[0].uri}/${local.ingest_token}"
  sensitive   = true
}

output "ingest_url" {
  description = "URL of the ingest function, without a token (append /<token> for the Omi app)."
  value       = google_cloudfunctions2_function.this["ingest"].service_config[0].uri
}

output "bucket" {
  description = "Recordings bucket: recordings/<uid>/<YYYY-MM-DD>/<start>.wav."
  value       = google_storage_bucket.recordings.name
}

output "source_bucket" {
  description = "Bucket holding the functions' source zips."
  value       = google_storage_bucket.source.name
}

output "topics" {
  description = "Pub/Sub topic names by role: chunks (ingest's, a list: one per shard, in shard order), dead_letter, ticks, recordings."
  value = merge(
    { chunks = google_pubsub_topic.chunks[*].name },
    { for k, t in google_pubsub_topic.this : k => t.name },
  )
}

output "subscriptions" {
  description = "Pub/Sub subscription names by role: chunks (the assembler's, a list: one per shard, in shard order; subscription i is on chunk topic i), dead_letter_hold, and recordings when recordings_subscription_name is set."
  value = merge(
    {
      chunks           = google_pubsub_subscription.chunks[*].name
      dead_letter_hold = google_pubsub_subscription.dead_letter_hold.name
    },
    { for s in google_pubsub_subscription.recordings : "recordings" => s.name },
  )
}

output "functions" {
  description = "Cloud Functions names: ingest (receive_chunk), assembler (assemble_recordings), vad (analyze_recording) when vad_consumer_enabled is true, and compactor (compact_recording) unless recordings_compaction is \"off\"."
  value       = { for name, fn in google_cloudfunctions2_function.this : name => fn.name }
}

output "service_accounts" {
  description = "Service account e-mails by role: ingest, assembler, trigger, build, vad when vad_consumer_enabled is true, and compactor unless recordings_compaction is \"off\"."
  value = merge(
    { for k, sa in google_service_account.this : k => sa.email },
    { for sa in google_service_account.vad : "vad" => sa.email },
    { for sa in google_service_account.compactor : "compactor" => sa.email },
  )
}

output "ingest_token_secret" {
  description = "Secret Manager secret holding the accepted ingest tokens (comma-separated)."
  value       = google_secret_manager_secret.ingest_token.secret_id
}

output "dashboard_url" {
  description = "Cloud Monitoring dashboard of the receiver."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${basename(google_monitoring_dashboard.main.id)}?project=${var.project_id}"
}
