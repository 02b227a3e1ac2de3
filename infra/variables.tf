# ---------------------------------------------------------------------------------------
# Project and naming
# ---------------------------------------------------------------------------------------

variable "project_id" {
  description = "ID of the Google Cloud project to deploy into (also GOOGLE_CLOUD_PROJECT for ingest and the assembler)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 characters: lowercase letters, digits and hyphens, starting with a letter), not a project name or number."
  }
}

variable "region" {
  description = "Region for the functions, buckets, Eventarc trigger, Scheduler jobs and Artifact Registry repository."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1 (not a zone such as us-central1-a, and not a multi-region)."
  }

  # Regions where Cloud Run functions (2nd gen), Eventarc Pub/Sub triggers (single regions
  # only) and Cloud Scheduler all run, from Google's location lists as of late 2026
  # (docs/deploy.md, "Regions"). Elsewhere the first apply fails half-way.
  validation {
    condition = contains([
      "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3", "asia-south1",
      "asia-south2", "asia-southeast1", "asia-southeast2", "australia-southeast1", "europe-central2",
      "europe-west1", "europe-west2", "europe-west3", "europe-west4", "europe-west6", "europe-west12",
      "me-central1", "me-central2", "me-west1", "northamerica-northeast1", "northamerica-northeast2",
      "southamerica-east1", "us-central1", "us-east1", "us-east4", "us-west1", "us-west2", "us-west3", "us-west4",
    ], var.region)
    error_message = "region must be one where Cloud Run functions, Eventarc Pub/Sub triggers and Cloud Scheduler all run (docs/deploy.md, \"Regions\")."
  }
}

variable "name_prefix" {
  description = "Prefix of the names of functions, service accounts, buckets, the secret, Scheduler jobs, log metrics and the image repository. Topic and subscription names have variables of their own (their defaults are the code's); a second deployment in the same project must change those too."
  type        = string
  default     = "omi"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,13}[a-z0-9])?$", var.name_prefix))
    error_message = "name_prefix must be 1-15 characters of lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen (it goes into service account IDs, which are limited to 30 characters)."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels; `app = \"omi-receiver\"` is always added."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for k, v in var.labels :
      can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "Label keys must match ^[a-z][a-z0-9_-]{0,62}$ and values ^[a-z0-9_-]{0,63}$ (lowercase only)."
  }
}

# ---------------------------------------------------------------------------------------
# Ingest token (Secret Manager)
# ---------------------------------------------------------------------------------------

variable "ingest_token" {
  description = "Token the Omi app puts in the webhook URL path. null (default) generates a random 40-character one. Set it to the new token at the end of a rotation (docs/deploy.md, \"Rotating the ingest token\")."
  type        = string
  default     = null
  nullable    = true
  sensitive   = true

  validation {
    condition     = var.ingest_token == null || can(regex("^[A-Za-z0-9_-]{20,128}$", var.ingest_token))
    error_message = "ingest_token must be 20-128 URL-safe characters (letters, digits, '_' and '-'): it goes into a URL path and a comma-separated list."
  }
}

variable "extra_ingest_tokens" {
  description = "More tokens accepted besides ingest_token, for a rotation without losing a chunk: add the new token here, apply, change the URL in the app, then make it ingest_token and empty this list (docs/deploy.md, \"Rotating the ingest token\")."
  type        = list(string)
  default     = []
  nullable    = false
  sensitive   = true

  validation {
    condition     = alltrue([for t in var.extra_ingest_tokens : can(regex("^[A-Za-z0-9_-]{20,128}$", t))])
    error_message = "Each extra ingest token must be 20-128 URL-safe characters (letters, digits, '_' and '-')."
  }
}

# ---------------------------------------------------------------------------------------
# Settings the code reads (omi_receiver/runtime/config.py): the variable name is the Config field,
# the environment variable is its upper-case form, and the defaults are the code's
# defaults (tests/infra/test_terraform.py checks both).
# ---------------------------------------------------------------------------------------

variable "chunks_topic" {
  description = "Pub/Sub topic ingest publishes chunks to (CHUNKS_TOPIC). With assembler_shards > 1 the base name of the shard topics <chunks_topic>-<i>."
  type        = string
  default     = "audio-chunks"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9._~%+-]{2,254}$", var.chunks_topic)) && !startswith(var.chunks_topic, "goog")
    error_message = "chunks_topic must be a valid Pub/Sub topic ID (3-255 characters, starting with a letter, not with 'goog')."
  }
}

variable "assembler_shards" {
  description = "Override of deployment_size's shards (personal 1, team 1, fleet 37); null (default) takes the size's. Shards of the assembler's work (ASSEMBLER_SHARDS, set on ingest and the assembler): ingest publishes each chunk to the topic of shard crc32(uid) % assembler_shards, and each shard gets its own chunk topic and subscription (<chunks_topic>-<i> and <chunks_subscription>-<i>; with 1, one topic named chunks_topic and one subscription named chunks_subscription), Scheduler job and pass per tick. Each chunk is delivered once, whatever the count. Raise it when one pass cannot keep up (oldest-unacked alert). Changing it re-maps users and replaces or destroys topics and subscriptions with their backlog: drain first (docs/deploy.md, \"Changing assembler_shards\")."
  type        = number
  default     = null

  validation {
    condition     = var.assembler_shards == null || try(var.assembler_shards >= 1 && var.assembler_shards <= 64 && floor(var.assembler_shards) == var.assembler_shards, false)
    error_message = "assembler_shards must be null or a whole number between 1 and 64."
  }
}

variable "max_chunk_bytes" {
  description = "Largest request body ingest accepts, in bytes (MAX_CHUNK_BYTES); even, at most Pub/Sub's 10 MB message limit."
  type        = number
  default     = 9900000

  validation {
    condition     = var.max_chunk_bytes >= 2 && var.max_chunk_bytes <= 10000000 && var.max_chunk_bytes % 2 == 0
    error_message = "max_chunk_bytes must be an even number of bytes between 2 and 10000000."
  }
}

variable "body_read_seconds" {
  description = "The longest a request's body may take to arrive at ingest (BODY_READ_SECONDS); a slower upload gets 408 and nothing is stored, so stalled clients cannot hold instances. A 10-second legacy chunk takes a fraction of a second from a server."
  type        = number
  default     = 10

  validation {
    condition     = var.body_read_seconds > 0 && var.body_read_seconds <= 60
    error_message = "body_read_seconds must be in (0, 60]."
  }
}

variable "allowed_uids" {
  description = "Omi uids this deployment accepts (ALLOWED_UIDS); ingest answers 403 to any other and stores nothing. Empty (default): every valid uid. Set it when you know your users, so a leaked URL cannot fill the bucket."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for uid in var.allowed_uids : can(regex("^[A-Za-z0-9_-]{1,128}$", uid))])
    error_message = "allowed_uids must hold Omi uids: 1-128 letters, digits, '_' or '-'."
  }
}

variable "publish_timeout_seconds" {
  description = "How long ingest waits for Pub/Sub before answering 503 (PUBLISH_TIMEOUT_SECONDS); below the Omi app's 15 s."
  type        = number
  default     = 8

  validation {
    condition     = var.publish_timeout_seconds > 0 && var.publish_timeout_seconds < 15
    error_message = "publish_timeout_seconds must be in (0, 15): the Omi app gives up after 15 s."
  }
}

variable "keep_ingest_request_logs" {
  description = "Store Cloud Run's request log of ingest. Off by default: each entry's URL holds the ingest token, and it is an entry per second per streaming user (monitoring.tf)."
  type        = bool
  default     = false
}

variable "log_accepted_chunks" {
  description = "Log a chunk_accepted line per accepted chunk (LOG_ACCEPTED_CHUNKS). Off by default: a Cloud Logging entry per second per streaming user; the dashboard counts accepted chunks from Cloud Run's request_count instead."
  type        = bool
  default     = false
}

variable "retry_after_seconds" {
  description = "Retry-After header value, in seconds, on ingest's 503 answers (RETRY_AFTER_SECONDS)."
  type        = number
  default     = 2

  validation {
    condition     = var.retry_after_seconds >= 0 && var.retry_after_seconds <= 60 && floor(var.retry_after_seconds) == var.retry_after_seconds
    error_message = "retry_after_seconds must be a whole number of seconds between 0 and 60."
  }
}

variable "chunk_encoding" {
  description = "How ingest stores each chunk's audio in its Pub/Sub message (CHUNK_ENCODING): \"flac\" (default: lossless, ~40 % fewer Pub/Sub bytes on speech, which Pub/Sub bills twice; a chunk FLAC cannot shrink goes as PCM all the same) or \"pcm\" (the body as posted). The assembler reads both either way, so a change needs no drain."
  type        = string
  default     = "flac"
  nullable    = false

  validation {
    condition     = contains(["flac", "pcm"], var.chunk_encoding)
    error_message = "chunk_encoding must be \"flac\" or \"pcm\"."
  }
}

variable "chunks_subscription" {
  description = "Pull subscription the assembler reads chunks from (CHUNKS_SUBSCRIPTION). With assembler_shards > 1 the base name of the shard subscriptions <chunks_subscription>-<i>, each on topic <chunks_topic>-<i>."
  type        = string
  default     = "audio-chunks-assembler"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9._~%+-]{2,254}$", var.chunks_subscription)) && !startswith(var.chunks_subscription, "goog")
    error_message = "chunks_subscription must be a valid Pub/Sub subscription ID (3-255 characters, starting with a letter, not with 'goog')."
  }
}

variable "dead_letter_topic" {
  description = "Topic for chunks that can never be assembled (DEAD_LETTER_TOPIC); the subscription <name>-hold keeps them."
  type        = string
  default     = "audio-chunks-dead-letter"

  validation {
    # 250, not 255: the hold subscription's ID is this name plus "-hold".
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9._~%+-]{2,249}$", var.dead_letter_topic)) && !startswith(var.dead_letter_topic, "goog")
    error_message = "dead_letter_topic must be a valid Pub/Sub topic ID of 3-250 characters, starting with a letter, not with 'goog'."
  }
}

variable "recordings_topic" {
  description = "Topic the assembler publishes a JSON event to for each finished recording (RECORDINGS_TOPIC)."
  type        = string
  default     = "recordings"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9._~%+-]{2,254}$", var.recordings_topic)) && !startswith(var.recordings_topic, "goog")
    error_message = "recordings_topic must be a valid Pub/Sub topic ID (3-255 characters, starting with a letter, not with 'goog')."
  }
}

variable "session_gap_seconds" {
  description = "A pause in a user's audio longer than this starts a new recording, and a recording idle this long is finalized (SESSION_GAP_SECONDS). Must exceed the chunk interval set in the Omi app."
  type        = number
  default     = 120

  validation {
    condition     = var.session_gap_seconds > 0 && floor(var.session_gap_seconds) == var.session_gap_seconds
    error_message = "session_gap_seconds must be a positive whole number of seconds."
  }
}

variable "max_recording_seconds" {
  description = "Longest recording, in seconds; longer audio is split (MAX_RECORDING_SECONDS)."
  type        = number
  default     = 3600

  validation {
    condition     = var.max_recording_seconds > 0 && floor(var.max_recording_seconds) == var.max_recording_seconds
    error_message = "max_recording_seconds must be a positive whole number of seconds."
  }
}

variable "settle_seconds" {
  description = "Chunks received less than this long before a pass starts wait for the next pass, so chunks still in flight sort into place (SETTLE_SECONDS)."
  type        = number
  default     = 10

  validation {
    condition     = var.settle_seconds >= 0 && var.settle_seconds < 300
    error_message = "settle_seconds must be between 0 and 300."
  }
}

variable "dedup_window_seconds" {
  description = "How far back, by received_at, chunk IDs are remembered per user to drop redeliveries and retries (DEDUP_WINDOW_SECONDS)."
  type        = number
  default     = 900

  validation {
    condition     = var.dedup_window_seconds >= 0 && floor(var.dedup_window_seconds) == var.dedup_window_seconds
    error_message = "dedup_window_seconds must be a whole number of seconds, 0 or more."
  }
}

variable "pass_seconds" {
  description = "Time budget of one assembler pass, in seconds (PASS_SECONDS); below the tick interval, the 120 s ack deadline, lease_seconds and the assembler's timeout."
  type        = number
  default     = 45

  validation {
    condition     = var.pass_seconds > 0 && var.pass_seconds < 120
    error_message = "pass_seconds must be in (0, 120): a pass must end before the chunks subscription's 120 s ack deadline."
  }
}

variable "lease_seconds" {
  description = "How long a pass holds its per-user lease; a crashed pass's lease expires after this (LEASE_SECONDS). Must exceed pass_seconds and the chunks subscriptions' 120 s ack deadline, so a crashed pass's users stay leased until its batch is redelivered."
  type        = number
  default     = 150

  validation {
    condition     = var.lease_seconds > 0 && floor(var.lease_seconds) == var.lease_seconds
    error_message = "lease_seconds must be a positive whole number of seconds."
  }
}

variable "max_messages_per_pull" {
  description = "Most messages the assembler asks for in one pull (MAX_MESSAGES_PER_PULL)."
  type        = number
  default     = 1000

  validation {
    condition     = var.max_messages_per_pull >= 1 && var.max_messages_per_pull <= 10000 && floor(var.max_messages_per_pull) == var.max_messages_per_pull
    error_message = "max_messages_per_pull must be a whole number between 1 and 10000."
  }
}

variable "max_pass_bytes" {
  description = "Override of deployment_size's max_pass_bytes (personal 128 MiB, team 256 MiB, fleet 512 MiB); null (default) takes the size's. Bytes of audio one assembler pass collects in memory before it flushes them (MAX_PASS_BYTES); it collects again only if it held no chunk back for ordering, so in practice this is the audio one pass assembles per tick (~140 users at 16 kHz for 256 MiB). At least 16 MiB; at most half of assembler_memory (per concurrent pass), checked at plan time."
  type        = number
  default     = null

  validation {
    condition     = var.max_pass_bytes == null || try(var.max_pass_bytes >= 16777216 && floor(var.max_pass_bytes) == var.max_pass_bytes, false)
    error_message = "max_pass_bytes must be null or a whole number of bytes, at least 16 MiB (16777216)."
  }
}

variable "flush_workers" {
  description = "Override of deployment_size's flush_workers (personal 4, team 16, fleet 16); null (default) takes the size's. Users flushed in parallel within one assembler pass (FLUSH_WORKERS)."
  type        = number
  default     = null

  validation {
    condition     = var.flush_workers == null || try(var.flush_workers >= 1 && var.flush_workers <= 256 && floor(var.flush_workers) == var.flush_workers, false)
    error_message = "flush_workers must be null or a whole number between 1 and 256."
  }
}

# ---------------------------------------------------------------------------------------
# Recordings bucket
# ---------------------------------------------------------------------------------------

variable "recordings_bucket_name" {
  description = "Name of the recordings bucket (RECORDINGS_BUCKET). null (default) uses <project_id>-<name_prefix>-recordings."
  type        = string
  default     = null

  validation {
    condition     = var.recordings_bucket_name == null || can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.recordings_bucket_name))
    error_message = "recordings_bucket_name must be a valid bucket name: 3-63 lowercase letters, digits, '-', '_' and '.', starting and ending with a letter or digit."
  }
}

variable "recordings_retention_days" {
  description = "Delete finished recordings (recordings/ objects) this many days after they were last written. null (default) keeps them forever. A lifecycle rule, not a bucket retention policy: a retention policy would forbid the overwrites and deletes the assembler makes."
  type        = number
  default     = null

  validation {
    condition     = var.recordings_retention_days == null || try(var.recordings_retention_days >= 1 && floor(var.recordings_retention_days) == var.recordings_retention_days, false)
    error_message = "recordings_retention_days must be null or a whole number of days, 1 or more."
  }
}

variable "work_objects_max_age_days" {
  description = "Backstop: delete work/ objects (parts of open recordings) older than this many days. The assembler deletes them itself within minutes of finalizing a recording."
  type        = number
  default     = 14

  validation {
    condition     = var.work_objects_max_age_days >= 1 && floor(var.work_objects_max_age_days) == var.work_objects_max_age_days
    error_message = "work_objects_max_age_days must be a whole number of days, 1 or more."
  }
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) encrypting the recordings bucket (CMEK). null (default) uses Google-managed keys. The key must be in the bucket's region; the Cloud Storage service agent is granted use of it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be null or projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY."
  }
}

variable "recordings_autoclass" {
  description = "Autoclass on the recordings bucket (default true): Cloud Storage moves each object not read for 30 days to Nearline, then Coldline (90) and Archive (365), and back to Standard when it is read, with no retrieval or early-deletion fees ($0.0025 per 1,000 objects per month; objects under 128 KiB, such as state/, stay Standard and are not charged it). false turns it off (objects stay where Autoclass left them; Standard from then on)."
  type        = bool
  default     = true
  nullable    = false
}

variable "recordings_force_destroy" {
  description = "Let `terraform destroy` delete the recordings bucket with every recording in it. false (default): destroy stops at the recordings bucket while it holds objects, so recordings survive a teardown."
  type        = bool
  default     = false
  nullable    = false
}

# ---------------------------------------------------------------------------------------
# Functions: deployment_size picks their sizing (sizing.tf); each variable below that
# defaults to null overrides one of its values.
# ---------------------------------------------------------------------------------------

variable "deployment_size" {
  description = "Sizing of the functions (sizing.tf; README, \"Sizing\"): \"personal\" (default: one person, one or two devices; fractional-CPU instances serving one request at a time), \"team\" (the defaults of releases before this setting: 1 vCPU, 80 requests per ingest instance, up to ~140 streaming users per assembler shard) or \"fleet\" (~10,000 users: 37 assembler shards of 1 GiB). It sets CPU, memory, concurrency and instance bounds of ingest and the assembler, and assembler_shards, max_pass_bytes and flush_workers; each of those variables, when set, overrides its value. A size with another shard count re-maps users to shards and replaces chunk topics and subscriptions with their backlog: drain first (docs/deploy.md, \"Changing assembler_shards\")."
  type        = string
  default     = "personal"
  nullable    = false

  validation {
    condition     = contains(["personal", "team", "fleet"], var.deployment_size)
    error_message = "deployment_size must be \"personal\", \"team\" or \"fleet\"."
  }
}

variable "ingest_memory" {
  description = "Override of deployment_size's memory of one ingest instance (Cloud Run quantity such as 512Mi or 1Gi; personal 256Mi, team and fleet 512Mi). null (default) takes the size's."
  type        = string
  default     = null

  validation {
    condition     = var.ingest_memory == null || can(regex("^[1-9][0-9]*(Mi|Gi)$", var.ingest_memory))
    error_message = "ingest_memory must be null or a number followed by Mi or Gi, such as 512Mi or 1Gi."
  }
}

variable "ingest_cpu" {
  description = "Override of deployment_size's vCPUs of one ingest instance (\"1\", \"2\", or a fraction such as \"0.5\", which needs concurrency 1; personal 0.167, team and fleet 1). null (default) takes the size's."
  type        = string
  default     = null

  validation {
    condition     = var.ingest_cpu == null || can(regex("^([1-9][0-9]*|0\\.[0-9]+)$", var.ingest_cpu))
    error_message = "ingest_cpu must be null, a whole number of vCPUs such as \"1\" or a fraction such as \"0.5\"."
  }
}

variable "ingest_concurrency" {
  description = "Override of deployment_size's requests one ingest instance serves at once (max_instance_request_concurrency; personal 1, team and fleet 80). null (default) takes the size's."
  type        = number
  default     = null

  validation {
    condition     = var.ingest_concurrency == null || try(var.ingest_concurrency >= 1 && var.ingest_concurrency <= 1000 && floor(var.ingest_concurrency) == var.ingest_concurrency, false)
    error_message = "ingest_concurrency must be null or a whole number between 1 and 1000."
  }
}

variable "ingest_timeout_seconds" {
  description = "Request timeout of ingest, in seconds; above body_read_seconds + publish_timeout_seconds."
  type        = number
  default     = 30

  validation {
    condition     = var.ingest_timeout_seconds >= 1 && var.ingest_timeout_seconds <= 3600 && floor(var.ingest_timeout_seconds) == var.ingest_timeout_seconds
    error_message = "ingest_timeout_seconds must be a whole number between 1 and 3600."
  }
}

variable "ingest_min_instances" {
  description = "Override of deployment_size's ingest instances kept warm (billed while idle; every size: 0, scale to zero). null (default) takes the size's."
  type        = number
  default     = null

  validation {
    condition     = var.ingest_min_instances == null || try(var.ingest_min_instances >= 0 && floor(var.ingest_min_instances) == var.ingest_min_instances, false)
    error_message = "ingest_min_instances must be null or a whole number, 0 or more."
  }
}

variable "ingest_max_instances" {
  description = "Override of deployment_size's upper bound on ingest instances (a cap on cost and on Pub/Sub publish load; personal 3, team 20, fleet 100). null (default) takes the size's."
  type        = number
  default     = null

  validation {
    condition     = var.ingest_max_instances == null || try(var.ingest_max_instances >= 1 && floor(var.ingest_max_instances) == var.ingest_max_instances, false)
    error_message = "ingest_max_instances must be null or a whole number, 1 or more."
  }
}

variable "assembler_memory" {
  description = "Override of deployment_size's memory of one assembler instance (Cloud Run quantity such as 1Gi; personal 512Mi, team and fleet 1Gi); it holds up to max_pass_bytes of audio per pass, which must stay within half of it. null (default) takes the size's."
  type        = string
  default     = null

  validation {
    condition     = var.assembler_memory == null || can(regex("^[1-9][0-9]*(Mi|Gi)$", var.assembler_memory))
    error_message = "assembler_memory must be null or a number followed by Mi or Gi, such as 1Gi or 2Gi."
  }
}

variable "assembler_cpu" {
  description = "Override of deployment_size's vCPUs of one assembler instance (\"1\", \"2\", or a fraction such as \"0.5\"; personal 0.333, team and fleet 1). null (default) takes the size's."
  type        = string
  default     = null

  validation {
    condition     = var.assembler_cpu == null || can(regex("^([1-9][0-9]*|0\\.[0-9]+)$", var.assembler_cpu))
    error_message = "assembler_cpu must be null, a whole number of vCPUs such as \"1\" or a fraction such as \"0.5\"."
  }
}

variable "assembler_concurrency" {
  description = "Override of deployment_size's ticks one assembler instance handles at once (every size: 1, each pass on its own instance). null (default) takes the size's."
  type        = number
  default     = null

  validation {
    condition     = var.assembler_concurrency == null || try(var.assembler_concurrency >= 1 && var.assembler_concurrency <= 1000 && floor(var.assembler_concurrency) == var.assembler_concurrency, false)
    error_message = "assembler_concurrency must be null or a whole number between 1 and 1000."
  }
}

variable "assembler_timeout_seconds" {
  description = "Timeout of one assembler pass, in seconds: pass_seconds plus the finalization work after it."
  type        = number
  default     = 120

  validation {
    condition     = var.assembler_timeout_seconds >= 1 && var.assembler_timeout_seconds <= 540 && floor(var.assembler_timeout_seconds) == var.assembler_timeout_seconds
    error_message = "assembler_timeout_seconds must be a whole number between 1 and 540 (the limit for event-driven functions)."
  }
}

variable "assembler_min_instances" {
  description = "Override of deployment_size's assembler instances kept warm (billed while idle; every size: 0, scale to zero between ticks). null (default) takes the size's."
  type        = number
  default     = null

  validation {
    condition     = var.assembler_min_instances == null || try(var.assembler_min_instances >= 0 && floor(var.assembler_min_instances) == var.assembler_min_instances, false)
    error_message = "assembler_min_instances must be null or a whole number, 0 or more."
  }
}

variable "assembler_max_instances" {
  description = "Upper bound on assembler instances. null (default) means assembler_shards + 1: one per shard's pass plus one for a pass that overruns into the next tick. At least assembler_shards (divided by assembler_concurrency) when set."
  type        = number
  default     = null

  validation {
    condition     = var.assembler_max_instances == null || try(var.assembler_max_instances >= 1 && floor(var.assembler_max_instances) == var.assembler_max_instances, false)
    error_message = "assembler_max_instances must be null or a whole number, 1 or more."
  }
}

# ---------------------------------------------------------------------------------------
# Scheduling
# ---------------------------------------------------------------------------------------

variable "assembler_schedule" {
  description = "Cron schedule (UTC) of the assembler ticks (every shard's job uses it). Every minute by default; a recording is finalized at most one tick after session_gap_seconds of silence."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.assembler_schedule))) == 5
    error_message = "assembler_schedule must be a cron expression with 5 space-separated fields, such as \"* * * * *\"."
  }
}

# ---------------------------------------------------------------------------------------
# Pub/Sub extras
# ---------------------------------------------------------------------------------------

variable "recordings_subscription_name" {
  description = "Name of an example pull subscription on the recordings topic for a downstream consumer. null (default) creates none."
  type        = string
  default     = null

  validation {
    condition     = var.recordings_subscription_name == null || can(regex("^[a-zA-Z][a-zA-Z0-9._~%+-]{2,254}$", var.recordings_subscription_name))
    error_message = "recordings_subscription_name must be null or a valid Pub/Sub subscription ID (3-255 characters, starting with a letter)."
  }
}

# ---------------------------------------------------------------------------------------
# Example downstream consumer (vad.tf)
# ---------------------------------------------------------------------------------------

variable "vad_consumer_enabled" {
  description = "Deploy analyze_recording, the example downstream consumer (docs/consumers.md): voice activity detection on every finished recording, written as <recording>.vad.json next to its WAV. false (default) creates none of its resources."
  type        = bool
  default     = false
  nullable    = false
}

variable "vad_aggressiveness" {
  description = "VAD_AGGRESSIVENESS of analyze_recording: webrtcvad's mode, from 0 (keeps the most audio as speech) to 3 (filters non-speech hardest)."
  type        = number
  default     = 2

  validation {
    condition     = contains([0, 1, 2, 3], var.vad_aggressiveness)
    error_message = "vad_aggressiveness must be 0, 1, 2 or 3."
  }
}

# ---------------------------------------------------------------------------------------
# Compaction of finished recordings (compaction.tf)
# ---------------------------------------------------------------------------------------

variable "recordings_compaction" {
  description = "COMPACTION_FORMAT of compact_recording: \"off\" (default: recordings stay WAV and none of its resources exist), \"flac\" (lossless, ~60 % of the WAV for speech) or \"opus\" (lossy, ~18 kbit/s, ~14x smaller). Each finished WAV is replaced by a verified <recording>.flac or .opus with the same metadata (README, Compaction)."
  type        = string
  default     = "off"
  nullable    = false

  validation {
    condition     = contains(["off", "flac", "opus"], var.recordings_compaction)
    error_message = "recordings_compaction must be \"off\", \"flac\" or \"opus\"."
  }
}

# ---------------------------------------------------------------------------------------
# Monitoring
# ---------------------------------------------------------------------------------------

variable "alert_email" {
  description = "E-mail address notified by the alert policies. null (default): the policies exist but notify nobody (they still show in the console)."
  type        = string
  default     = null

  validation {
    condition     = var.alert_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be null or an e-mail address."
  }
}

variable "oldest_unacked_alert_seconds" {
  description = "Alert when the oldest unacknowledged chunk on any chunk subscription (one per shard) is older than this many seconds (the assembler is falling behind or failing)."
  type        = number
  default     = 300

  validation {
    condition     = var.oldest_unacked_alert_seconds >= 60 && floor(var.oldest_unacked_alert_seconds) == var.oldest_unacked_alert_seconds
    error_message = "oldest_unacked_alert_seconds must be a whole number of seconds, 60 or more."
  }
}

variable "ingest_rejections_alert_threshold" {
  description = "Alert when ingest refuses more than this many requests for one reason within 5 minutes (a stale token in the Omi app after a rotation, a uid outside allowed_uids, a broken sender, or strangers probing the URL)."
  type        = number
  default     = 20

  validation {
    condition     = var.ingest_rejections_alert_threshold >= 0 && floor(var.ingest_rejections_alert_threshold) == var.ingest_rejections_alert_threshold
    error_message = "ingest_rejections_alert_threshold must be a whole number, 0 or more."
  }
}

variable "ingest_5xx_alert_threshold" {
  description = "Alert when ingest answers more than this many 5xx responses within 5 minutes. A few 503s with Retry-After are normal back-pressure; the Omi app retries them."
  type        = number
  default     = 5

  validation {
    condition     = var.ingest_5xx_alert_threshold >= 0 && floor(var.ingest_5xx_alert_threshold) == var.ingest_5xx_alert_threshold
    error_message = "ingest_5xx_alert_threshold must be a whole number, 0 or more."
  }
}
