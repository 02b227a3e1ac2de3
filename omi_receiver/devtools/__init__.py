"""What developers run on their machine: the local stack and what drives it. Never deployed.

stack.py       `make up` / `make down`: emulators, both functions, the ticker
settings.py    the local tools' settings (ports, tick, .local/), read once from the environment
emulators.py   the Pub/Sub emulator and fake-gcs-server
functions.py   a function served by the functions-framework CLI: start, wait, stop, kill
resources.py   topics, subscriptions and bucket on the emulators, as infra/ declares them
ticker.py      stands in for Cloud Scheduler
simulate/      a simulated Omi device (current and legacy senders)
demo.py        `make demo`
faultproxy.py  a Cloud Storage proxy that fails requests, for the soak and tests
"""
