"""The floor for the ingest benchmark: a functions-framework function that reads the body
and answers 200 with a small JSON, without checking or publishing anything. Served exactly
like ingest (`functions-framework --source bench/floor_main.py --target receive_chunk`)."""

import json

import functions_framework


@functions_framework.http
def receive_chunk(request):
    body = request.get_data()
    return json.dumps({"bytes": len(body)}), 200, {"Content-Type": "application/json"}
