"""Ingest (receive_chunk): one POST of PCM16 audio becomes one Pub/Sub message.

handler.py     the flow: check, publish, answer; the one place failures become HTTP
checks.py      what a POST must be (method, token, headers, query, uid) before its body
body.py        the body read whole, within BODY_READ_SECONDS, or not at all
publisher.py   Publish RPCs from the request threads, retried within the time bound
rejections.py  the refusal log, bounded per instance
"""

from .handler import handle, handle_http, set_config

__all__ = ["handle", "handle_http", "set_config"]
