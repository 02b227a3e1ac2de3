"""What the Cloud Functions run: the only code deployed, with main.py and requirements.txt.

ingest/      receive_chunk: check a POST, publish it to Pub/Sub, answer
assembler/   assemble_recordings: turn waiting chunks into WAV recordings
compaction/  compact_recording (optional): a finished WAV replaced by verified FLAC or Opus
config.py    settings from environment variables, read once
contract.py  the chunk message both functions agree on
codec.py     a chunk's FLAC encoding (ingest) and decoding (the assembler, replay)
clients.py   lazy Google Cloud clients, one per instance
errors.py, lazy.py, logs.py, wav.py
"""
