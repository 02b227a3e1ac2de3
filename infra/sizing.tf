# ---------------------------------------------------------------------------------------
# Sizing: one setting, var.deployment_size, picks CPU, memory, concurrency, instance bounds
# and the assembler's shards and memory bounds for the functions. Each per-function
# variable (ingest_cpu, assembler_memory, assembler_shards, max_pass_bytes, ...) is null by
# default and, when set, overrides its size's value. functions.tf checks the result against
# Cloud Run's limits at plan time, whatever the mix.
#
# What each size holds and why (README, "Sizing"; prices in docs/cost.md):
#
# personal: one person with one or two Omi devices. The sender posts a user's 1-second
#   chunks one after another, each waiting for the previous answer, so one device keeps at
#   most one request in flight: concurrency 1 loses nothing, and it is what lets Cloud Run
#   give an instance less than one vCPU. A POST costs ~2-3 CPU-ms (bench/results/ingest.json).
#   Measured under functions-framework after 120 POSTs, with the FLAC codec (numpy) loaded,
#   an ingest instance holds ~86 MiB (PSS; ~150 MiB RSS counting gunicorn's master and worker
#   each in full): over 128 MiB's comfort, so 256 MiB. CPU 0.167: a cold start is CPU-bound
#   (~1 CPU-second to the first answer); under a CPU quota it measured ~7 s at 0.167 vCPU and
#   ~14 s at 0.083, too close to the sender's 15 s timeout (docs/performance.md, "Ingest under
#   a fractional vCPU"). Three instances: one per device,
#   and a third for a retry or a reconnecting second stream that overlaps them. The assembler gets
#   0.333 vCPU and 512 MiB: one or two users' minute of audio is ~2-4 MB, so 128 MiB of
#   max_pass_bytes (a quarter of the memory) leaves a backlog of over an hour for one pass.
# team: the defaults of every release before deployment_size existed, unchanged: 1 vCPU
#   ingest instances serving 80 requests each, up to 20; one assembler shard on 1 vCPU and
#   1 GiB holding 256 MiB of audio per pass (~140 users streaming at 16 kHz).
# fleet: ~10,000 users, the settings docs/performance.md ("Settings for 10,000 users")
#   derives from the bench (bench/cost.py plan(10_000)): 37 shards of 1 GiB assembler
#   instances holding 512 MiB of audio per pass (~273 users each: CPU-bound, decoding FLAC
#   chunks included, in half of PASS_SECONDS). Ingest: 10,000 POSTs a second
#   at ~2 CPU-ms each is ~20 busy vCPUs, ~34 instances at Cloud Run's ~60 % target
#   utilization; up to 100 leaves room for bursts without an unbounded bill.
#
# The assembler's max instances is not part of a size: it follows the shards (functions.tf,
# one per shard's pass plus one for an overrun) unless assembler_max_instances is set.
# ---------------------------------------------------------------------------------------

locals {
  sizes = {
    personal = {
      ingest    = { cpu = "0.167", memory = "256Mi", concurrency = 1, min_instances = 0, max_instances = 3 }
      assembler = { cpu = "0.333", memory = "512Mi", concurrency = 1, min_instances = 0, shards = 1, max_pass_bytes = 134217728, flush_workers = 4 }
    }
    team = {
      ingest    = { cpu = "1", memory = "512Mi", concurrency = 80, min_instances = 0, max_instances = 20 }
      assembler = { cpu = "1", memory = "1Gi", concurrency = 1, min_instances = 0, shards = 1, max_pass_bytes = 268435456, flush_workers = 16 }
    }
    fleet = {
      ingest    = { cpu = "1", memory = "512Mi", concurrency = 80, min_instances = 0, max_instances = 100 }
      assembler = { cpu = "1", memory = "1Gi", concurrency = 1, min_instances = 0, shards = 37, max_pass_bytes = 536870912, flush_workers = 16 }
    }
  }
  size = local.sizes[var.deployment_size]

  # The size's values with every override set in its place.
  sizing = {
    ingest = {
      cpu           = coalesce(var.ingest_cpu, local.size.ingest.cpu)
      memory        = coalesce(var.ingest_memory, local.size.ingest.memory)
      concurrency   = coalesce(var.ingest_concurrency, local.size.ingest.concurrency)
      min_instances = coalesce(var.ingest_min_instances, local.size.ingest.min_instances)
      max_instances = coalesce(var.ingest_max_instances, local.size.ingest.max_instances)
    }
    assembler = {
      cpu           = coalesce(var.assembler_cpu, local.size.assembler.cpu)
      memory        = coalesce(var.assembler_memory, local.size.assembler.memory)
      concurrency   = coalesce(var.assembler_concurrency, local.size.assembler.concurrency)
      min_instances = coalesce(var.assembler_min_instances, local.size.assembler.min_instances)
    }
  }
  # Read by both functions' settings and by pubsub.tf, iam.tf and scheduler.tf (one topic,
  # subscription, grant and Scheduler job per shard).
  assembler_shards = coalesce(var.assembler_shards, local.size.assembler.shards)
  max_pass_bytes   = coalesce(var.max_pass_bytes, local.size.assembler.max_pass_bytes)
  flush_workers    = coalesce(var.flush_workers, local.size.assembler.flush_workers)
}
