# ---------------------------------------------------------------------------------------
# Log-based metrics, alerts and a dashboard. The code logs one JSON object per line with
# an `event` field (omi_receiver/runtime/logs.py); Cloud Logging parses it into jsonPayload.
# ---------------------------------------------------------------------------------------

locals {
  ingest_logs    = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.ingest_function_name}\""
  assembler_logs = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.assembler_function_name}\""

  metric_prefix = "logging.googleapis.com/user/${var.name_prefix}"

  notification_channels = google_monitoring_notification_channel.email[*].id

  # Every shard's chunk subscription: a full match against their names, joined by "|".
  # '.' and '+' (the only regex metacharacters a subscription ID may hold) go in brackets.
  chunks_subscription_regex  = join("|", [for s in google_pubsub_subscription.chunks : replace(s.name, "/([.+])/", "[$1]")])
  chunks_subscription_filter = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=monitoring.regex.full_match(\"${local.chunks_subscription_regex}\")"
  # For titles and texts: the subscription, or the pattern of the shards' subscriptions.
  chunks_subscriptions_label = local.assembler_shards == 1 ? var.chunks_subscription : "${var.chunks_subscription}-0 ... -${local.assembler_shards - 1}"
  chunks_topics_label        = local.assembler_shards == 1 ? "`${var.chunks_topic}`" : "`${var.chunks_topic}-<shard>`, 0 to ${local.assembler_shards - 1}"
  hold_subscription_filter   = "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter_hold.name}\""
  ingest_requests_filter     = "metric.type=\"run.googleapis.com/request_count\" AND ${local.ingest_logs}"

  # The refusal count in PromQL: Monitoring's name for a metric with the first "/" as ":" and
  # every other character PromQL does not allow as "_"; a distribution's sum is `<name>_sum`.
  # A log-based metric can come from several resource types, so the one is named.
  rejected_promql_metric = "logging_googleapis_com:${replace("user/${google_logging_metric.ingest_rejections.name}", "/[^a-zA-Z0-9_]/", "_")}_sum"
  rejected_by_reason     = "sum by (reason) (increase(${local.rejected_promql_metric}{monitored_resource=\"cloud_run_revision\",service_name=\"${local.ingest_function_name}\"}[%s]))"
}

# --- Cloud Run's request log of ingest -------------------------------------------------

# Cloud Run logs every request with its full URL, and ingest's URL holds the token in its
# path: anyone who can read the project's logs could read the token. It is also a log entry
# per second per streaming user. So these entries are not stored unless
# keep_ingest_request_logs is set; the request_count and request_latencies metrics, which
# the dashboard and the 5xx alert use, do not come from logs and stay. Refusals and
# publish failures are still logged by ingest itself (chunk_rejected, publish_failed).
resource "google_logging_project_exclusion" "ingest_request_logs" {
  count       = var.keep_ingest_request_logs ? 0 : 1
  project     = var.project_id
  name        = "${var.name_prefix}-ingest-request-logs"
  description = "Cloud Run request logs of ${local.ingest_function_name}: their URLs hold the ingest token."
  filter      = "${local.ingest_logs} AND logName=\"projects/${var.project_id}/logs/run.googleapis.com%2Frequests\""

  depends_on = [google_project_service.apis]
}

# --- Log-based metrics ----------------------------------------------------------------

# Accepted chunks are counted by Cloud Run's own request_count (2xx answers of ingest, each
# one accepted chunk), not by a log-based metric: ingest logs no line per accepted chunk by
# default (var.log_accepted_chunks), which would cost a log entry per second per user.

# Refused requests by reason. Ingest bounds its refusal lines per instance (a flood of wrong
# tokens must not drive logging cost, omi_receiver/runtime/ingest/rejections.py): each line
# carries `count`, the refusals it stands for (1, or N for a minute's summary). So a
# DISTRIBUTION of `count`, not a counter of lines: its sum is the number of refusals (PromQL
# `_sum`, used by the dashboard and the alert below), its count the number of lines.
#
# A metric of its own, not the `chunk_rejected` counter of earlier versions turned into a
# distribution: Cloud Logging cannot change a log-based metric's value type once it exists,
# so an upgrade destroys that counter and creates this one.
resource "google_logging_metric" "ingest_rejections" {
  project         = var.project_id
  name            = "${var.name_prefix}/ingest_rejections"
  description     = "Requests refused by ingest, by reason (the error code of the answer); the sum of the values is the number of refusals."
  filter          = "${local.ingest_logs} AND jsonPayload.event=\"chunk_rejected\""
  value_extractor = "EXTRACT(jsonPayload.count)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "Chunks rejected"

    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "Error code of the answer (jsonPayload.error)."
    }
  }

  label_extractors = {
    reason = "EXTRACT(jsonPayload.error)"
  }

  # 1, 2, 4, ... 2048 refusals per line.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 12
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.apis]
}

# The assembler logs one entry per flush with the number of chunks it wrote. A DISTRIBUTION
# of that number, not a counter: a counter could only count entries (flushes), while the
# distribution keeps both the flush count and the chunks per flush (its mean times count is
# the chunks assembled). Chunks per flush is what sets the Cloud Storage operation cost
# (docs/prices.md: one write per chunk would cost more than Pub/Sub), so it is worth seeing.
resource "google_logging_metric" "chunks_assembled" {
  project         = var.project_id
  name            = "${var.name_prefix}/chunks_assembled"
  description     = "Chunks written per assembler flush (distribution; count = flushes)."
  filter          = "${local.assembler_logs} AND jsonPayload.event=\"chunks_assembled\""
  value_extractor = "EXTRACT(jsonPayload.chunks)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "Chunks per flush"
  }

  # 1, 2, 4, ... 2048 chunks per flush.
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 12
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.apis]
}

# Same shape for duplicates: entries carry how many redelivered or retried chunks a flush
# dropped, so a distribution keeps the number of duplicates, not only of entries.
resource "google_logging_metric" "duplicates_dropped" {
  project         = var.project_id
  name            = "${var.name_prefix}/duplicates_dropped"
  description     = "Duplicate chunks (redeliveries, client retries) dropped per assembler flush (distribution)."
  filter          = "${local.assembler_logs} AND jsonPayload.event=\"duplicates_dropped\""
  value_extractor = "EXTRACT(jsonPayload.duplicates)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "Duplicates dropped"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 12
      growth_factor      = 2
      scale              = 1
    }
  }

  depends_on = [google_project_service.apis]
}

# --- Alerts ---------------------------------------------------------------------------

resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == null ? 0 : 1

  project      = var.project_id
  display_name = "Omi receiver alerts (${var.name_prefix})"
  type         = "email"
  user_labels  = local.labels

  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "Omi receiver (${var.name_prefix}): chunks dead-lettered"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "Messages waiting in ${google_pubsub_subscription.dead_letter_hold.name}"

    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.hold_subscription_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      The assembler gave up on at least one message after ${local.max_delivery_attempts} attempts and Pub/Sub moved it to `${var.dead_letter_topic}`. The messages wait in the pull subscription `${google_pubsub_subscription.dead_letter_hold.name}` for at most 7 days.

      Look at the assembler's errors in Cloud Logging, then inspect them with `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter_hold.name} --limit=10` (without `--auto-ack` they stay). Republish fixed chunks with the same attributes and ordering key to the chunk topic of their user's shard, crc32(uid) % ${local.assembler_shards} (${local.chunks_topics_label}), or ack them to discard.
    EOT
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "chunks_backlog" {
  project               = var.project_id
  display_name          = "Omi receiver (${var.name_prefix}): chunks waiting too long"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    # No cross-series reducer: each shard's subscription is a time series of its own, and
    # any one of them crossing the threshold opens an incident naming it.
    display_name = "Oldest unacked chunk in ${local.chunks_subscriptions_label} older than ${var.oldest_unacked_alert_seconds} s"

    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.chunks_subscription_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.oldest_unacked_alert_seconds
      duration        = "0s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Chunks are waiting in a chunk subscription (`${local.chunks_subscriptions_label}`; the incident names which) longer than expected: the assembler is failing or cannot keep up. Check the assembler's logs (`jsonPayload.event="assembler_pass"`) and the Scheduler jobs (`${var.name_prefix}-assembler-tick-*`, one per shard). If passes are healthy but behind (their `stopped` field says `max_pass_bytes` or `time` pass after pass), raise `assembler_shards`, or `max_pass_bytes` with `assembler_memory` (docs/deploy.md, "Changing assembler_shards": drain first). Chunks are kept for 7 days.
    EOT
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "chunks_rejected" {
  project               = var.project_id
  display_name          = "Omi receiver (${var.name_prefix}): ingest refuses chunks"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    # One series per reason: the incident names the reason that crossed the threshold.
    display_name = "More than ${var.ingest_rejections_alert_threshold} refusals of one reason by ${local.ingest_function_name} in 5 minutes"

    condition_prometheus_query_language {
      query               = "${format(local.rejected_by_reason, "5m")} > ${var.ingest_rejections_alert_threshold}"
      duration            = "0s"
      evaluation_interval = "60s"
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      Ingest refuses many requests for one reason (the incident's `reason` label; README, "What ingest accepts", lists them). Refused chunks are not stored, and the Omi app retries only 408 and 429, so a sender refused steadily is losing audio:

      - `unauthorized`: the token in the app's URL is not one of `INGEST_TOKENS` (a rotation left the app on the old URL), or strangers are trying the URL.
      - `uid_not_allowed`: a uid outside `allowed_uids` streams to this URL; add it, or the URL leaked.
      - `incomplete_body` / `body_timeout`: uploads are cut short or too slow (the sender's network); `too_large`, `unsupported_*`, `invalid_*`: a sender that does not follow the webhook contract.

      The lines in Cloud Logging: `jsonPayload.event="chunk_rejected"` on `${local.ingest_function_name}`, one per reason per minute per instance plus a summary line with the count.
    EOT
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "ingest_5xx" {
  project               = var.project_id
  display_name          = "Omi receiver (${var.name_prefix}): ingest 5xx"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = local.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "More than ${var.ingest_5xx_alert_threshold} 5xx answers from ${local.ingest_function_name} in 5 minutes"

    condition_threshold {
      filter          = "${local.ingest_requests_filter} AND metric.labels.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.ingest_5xx_alert_threshold
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      The ingest function answers 5xx: 503 means Pub/Sub did not confirm a publish within ${var.publish_timeout_seconds} s (the Omi app retries); 500 means a bug. Check `${local.ingest_function_name}` in Cloud Logging and Pub/Sub's status.
    EOT
  }

  depends_on = [google_project_service.apis]
}

# --- Dashboard ------------------------------------------------------------------------

locals {
  dashboard_widgets = [
    {
      title = "Chunks accepted (per minute)"
      xyChart = {
        dataSets = [{
          plotType       = "LINE"
          legendTemplate = "accepted"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = "${local.ingest_requests_filter} AND metric.labels.response_code_class=\"2xx\""
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_DELTA", crossSeriesReducer = "REDUCE_SUM" }
            }
          }
        }]
      }
    },
    {
      title = "Chunks rejected by reason (per minute)"
      xyChart = {
        dataSets = [{
          plotType        = "LINE"
          timeSeriesQuery = { prometheusQuery = format(local.rejected_by_reason, "1m") }
        }]
      }
    },
    {
      title = "Ingest answers by class (per minute)"
      xyChart = {
        dataSets = [{
          plotType = "STACKED_BAR"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = local.ingest_requests_filter
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_DELTA", crossSeriesReducer = "REDUCE_SUM", groupByFields = ["metric.label.response_code_class"] }
            }
          }
        }]
      }
    },
    {
      title = "Ingest latency p50 / p99 (ms)"
      xyChart = {
        dataSets = [for p in ["50", "99"] : {
          plotType       = "LINE"
          legendTemplate = "p${p}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = "metric.type=\"run.googleapis.com/request_latencies\" AND ${local.ingest_logs}"
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_DELTA", crossSeriesReducer = "REDUCE_PERCENTILE_${p}" }
            }
          }
        }]
      }
    },
    {
      title = "Chunks per assembler flush"
      xyChart = {
        dataSets = [{
          plotType = "HEATMAP"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = "metric.type=\"${local.metric_prefix}/chunks_assembled\""
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_DELTA", crossSeriesReducer = "REDUCE_SUM" }
            }
          }
        }]
      }
    },
    {
      title = "Duplicates dropped per flush"
      xyChart = {
        dataSets = [{
          plotType = "HEATMAP"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = "metric.type=\"${local.metric_prefix}/duplicates_dropped\""
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_DELTA", crossSeriesReducer = "REDUCE_SUM" }
            }
          }
        }]
      }
    },
    {
      title = "Oldest unacked chunk (s), per chunk subscription"
      xyChart = {
        thresholds = [{ value = var.oldest_unacked_alert_seconds, label = "alert" }]
        dataSets = [{
          plotType       = "LINE"
          legendTemplate = "$${resource.labels.subscription_id}"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.chunks_subscription_filter}"
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
            }
          }
        }]
      }
    },
    {
      title = "Chunks backlog and dead letters held"
      xyChart = {
        dataSets = [
          {
            plotType       = "LINE"
            legendTemplate = "backlog ($${resource.labels.subscription_id})"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter      = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.chunks_subscription_filter}"
                aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
              }
            }
          },
          {
            plotType       = "LINE"
            legendTemplate = "dead letters (${google_pubsub_subscription.dead_letter_hold.name})"
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter      = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.hold_subscription_filter}"
                aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
              }
            }
          },
        ]
      }
    },
    {
      title = "Instances by function"
      xyChart = {
        dataSets = [{
          plotType = "STACKED_AREA"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = "metric.type=\"run.googleapis.com/container/instance_count\" AND resource.type=\"cloud_run_revision\" AND (resource.labels.service_name=\"${local.ingest_function_name}\" OR resource.labels.service_name=\"${local.assembler_function_name}\")"
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX", crossSeriesReducer = "REDUCE_SUM", groupByFields = ["resource.label.service_name"] }
            }
          }
        }]
      }
    },
  ]
}

resource "google_monitoring_dashboard" "main" {
  project = var.project_id

  # Two tiles per row, 6 columns by 4 rows each. Zero positions are left out: the API
  # drops them, and keeping them would show a diff on every plan.
  dashboard_json = jsonencode({
    displayName = "Omi receiver (${var.name_prefix})"
    mosaicLayout = {
      columns = 12
      tiles = [
        for i, widget in local.dashboard_widgets : merge(
          { width = 6, height = 4, widget = widget },
          i % 2 == 1 ? { xPos = 6 } : {},
          i >= 2 ? { yPos = floor(i / 2) * 4 } : {},
        )
      ]
    }
  })

  depends_on = [google_project_service.apis]
}
