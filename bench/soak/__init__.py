"""Fault-injection soak: many simulated Omi devices against ingest and the assembler while
the assembler is SIGKILLed, Cloud Storage fails requests and senders repeat POSTs.

    python -m bench.soak [--devices 50] [--minutes 10] [--seed 1] [--speed 1] ...   (make soak)

Everything runs on free ports of 127.0.0.1, in a temporary directory:

* the Pub/Sub emulator and fake-gcs-server (omi_receiver.devtools.emulators);
* ingest (`receive_chunk`) and the assembler (`assemble_recordings`), each a
  functions-framework process serving main.py (omi_receiver.devtools.functions);
* between the assembler and fake-gcs-server, omi_receiver.devtools.faultproxy answering 429
  or 503 to a share of the requests, before or after the request took effect;
* a ticker (this process) POSTing one tick CloudEvent at a time, and a killer that
  SIGKILLs the assembler's process group at random moments, preferably mid-pass, then
  restarts it (the killed pass leaves a lease and unacked messages behind), and every
  third time SIGSTOPs it past the ack deadline instead;
* N device threads running omi_receiver.devtools.simulate.stream: current and legacy senders,
  8 and 16 kHz, a few pausing longer than SESSION_GAP_SECONDS, some switching sample
  rate, current senders repeating ~5 % of their POSTs with the same Idempotency-Key and
  cutting ~1.5 % of them part-way (Content-Length announced, part of the body sent, the
  connection closed), then retrying the whole chunk with the same key.

Afterwards the faults stop, ticks go on until every recording is final and the
subscription is drained, and every recording is checked against the devices' ledgers:
per device, the recordings (by name) must hold exactly the acknowledged chunks, in order,
once each, in valid WAVs split exactly where the rules say (pause or idle time over the
gap, sample-rate change, MAX_RECORDING_SECONDS). The run exits 1 on any lost or
duplicated chunk or any other failed check. docs/soak.md explains the numbers.

The parts:

  settings.py       Settings (the flags), the sender intervals
  devices.py        the device plan, their audio and ledgers, the device threads (Fleet)
  backends.py       emulators, resources provisioned by the code under test, direct reads
  driver.py         both functions; the assembler ticked one pass at a time, restarted
  faults.py         kills, stalls, the storage fault proxy
  assembler_log.py  the assembler's log, followed: passes, events, errors
  verify.py         ledgers against recordings: lost, doubled, out of order, valid WAVs
  splits.py         where recordings start, against the splitting rules
  report.py         the result (soak.json), the table, progress lines
  run.py            one run as a sequence of named steps
  cli.py            the command line
"""

from bench.soak.run import run
from bench.soak.settings import Settings

__all__ = ["Settings", "run"]
