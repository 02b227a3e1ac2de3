"""What operators run against a deployment (or the local stack): the `omi-receiver` command.

cli.py         the command line: recordings list/download/erase/stats, dlq inspect/replay
catalog.py     the recordings in the bucket: list, stats, download
deadletter.py  dead-lettered chunks: inspect, replay
erase.py       erasing a user's audio, under their lease
"""
