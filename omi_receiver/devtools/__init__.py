"""What developers run on their machine: the local stack and what drives it. Never deployed.

  stack.py       `make up` / `make down`: emulators, both functions, the ticker
  emulators.py   the Pub/Sub emulator and fake-gcs-server
  resources.py   topics, subscriptions and bucket on the emulators, as infra/ declares them
  ticker.py      stands in for Cloud Scheduler
  simulate.py    a simulated Omi device (current and legacy senders)
  demo.py        `make demo`
  faultproxy.py  a Cloud Storage proxy that fails requests, for the soak and tests
"""
