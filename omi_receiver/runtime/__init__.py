"""What the Cloud Functions run: the only code deployed, with main.py and requirements.txt.

ingest/      receive_chunk: check a POST, publish it to Pub/Sub, answer
assembler/   assemble_recordings: turn waiting chunks into WAV recordings
config.py    settings from environment variables, read once
contract.py  the chunk message both functions agree on
clients.py   lazy Google Cloud clients, one per instance
errors.py, logs.py, wav.py
"""
