"""What Terraform passes to Google's APIs as JSON or YAML, parsed into the APIs' own messages,
and the metrics and log events the monitoring names, checked to exist (api_types.py)."""

from __future__ import annotations

import re
from pathlib import Path

import api_types
import hcl_eval
import pytest
import tf_config
from google.protobuf import json_format

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CLOUDBUILD = REPO / "cloudbuild.yaml"

# Variable values the dashboard and alerts are rendered with, besides the defaults: the
# branches that depend on them (one shard or several, notifications or none) differ.
VARIANTS = {
    "defaults": {},
    "sharded": {"assembler_shards": 3},
    "alert e-mail, retention, CMEK": {
        "alert_email": "ops@example.com",
        "recordings_retention_days": 30,
        "kms_key_name": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
    },
}


@pytest.fixture(scope="module")
def config() -> tf_config.Config:
    return tf_config.load(INFRA)


@pytest.fixture(scope="module")
def calls() -> list[api_types.LogCall]:
    return api_types.log_calls()


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
    return VARIANTS[request.param]


# --------------------------------------------------------------------------------------
# JSON and YAML into the APIs' messages
# --------------------------------------------------------------------------------------


def test_dashboards_parse_as_monitoring_dashboards(config, variant):
    rendered = api_types.dashboards(config, variant)
    assert rendered, "infra/ declares no google_monitoring_dashboard"
    for address, data in rendered.items():
        try:
            dash = api_types.parse_dashboard(data)
        except json_format.ParseError as exc:
            pytest.fail(f"{address}: dashboard_json is not a Dashboard: {exc}")
        assert dash.display_name
        # Mosaic layout: every tile inside the grid, none overlapping (the API refuses both).
        layout = dash.mosaic_layout
        cells: dict[tuple[int, int], int] = {}
        for i, tile in enumerate(layout.tiles):
            assert tile.width > 0 and tile.height > 0, f"{address}: tile {i} has no size"
            assert tile.x_pos + tile.width <= layout.columns, (
                f"{address}: tile {i} is wider than the {layout.columns} columns"
            )
            for x in range(tile.x_pos, tile.x_pos + tile.width):
                for y in range(tile.y_pos, tile.y_pos + tile.height):
                    assert (x, y) not in cells, f"{address}: tiles {cells[(x, y)]} and {i} overlap at ({x}, {y})"
                    cells[(x, y)] = i


def test_placeholders_stand_for_values_known_after_apply(config):
    """Nothing in the rendered dashboard depends on a value Terraform learns only at apply
    but a placeholder; that rendering took the HCL's real shape (one tile per widget)."""
    rendered = api_types.dashboards(config)
    for address, data in rendered.items():
        block = config.resources[tuple(address.split("."))]
        widgets = re.findall(r"\blocal\.(\w+)", block.attributes["dashboard_json"].src)
        tiles = data["mosaicLayout"]["tiles"]
        for name in widgets:
            value = tf_config.ConfigResolver(config).local(name)
            if isinstance(value, list):
                assert len(tiles) == len(value), f"{address}: {len(value)} widgets in local.{name}, {len(tiles)} tiles"


def test_unknown_fields_are_refused():
    """The parse is strict: a field the message does not have, or a value of the wrong type,
    is an error (so the tests above would catch a misspelt dashboard or build field)."""
    from google.cloud.devtools.cloudbuild_v1.types import Build
    from google.cloud.monitoring_dashboard_v1.types import Dashboard

    with pytest.raises(json_format.ParseError, match="xyCharts"):
        api_types.parse_message(
            Dashboard, {"displayName": "x", "mosaicLayout": {"tiles": [{"widget": {"xyCharts": {}}}]}}
        )
    with pytest.raises(json_format.ParseError):
        api_types.parse_message(Dashboard, {"mosaicLayout": {"columns": "twelve"}})
    with pytest.raises(json_format.ParseError, match="waitfor"):
        api_types.parse_message(Build, {"steps": [{"name": "x", "waitfor": ["-"]}]})


def test_cloudbuild_yaml_parses_as_a_build():
    try:
        build = api_types.parse_cloudbuild(CLOUDBUILD)
    except json_format.ParseError as exc:
        pytest.fail(f"cloudbuild.yaml is not a Cloud Build Build: {exc}")
    assert build.steps


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def test_every_metric_named_exists(config, variant):
    log_metrics = api_types.log_metrics(config, variant)
    problems = []
    for q in api_types.queries(config, variant):
        if q.kind == "filter":
            for metric in api_types.METRIC_TYPE.findall(q.text):
                if metric.startswith(api_types.LOG_METRIC_PREFIX):
                    if metric not in log_metrics:
                        problems.append(
                            f"{q.where}: {metric} is no declared google_logging_metric "
                            f"(declared: {sorted(log_metrics)})"
                        )
                elif metric not in api_types.BUILTIN_METRICS:
                    problems.append(f"{q.where}: {metric} is not a known built-in metric (api_types.BUILTIN_METRICS)")
        elif q.kind == "promql":
            for name in api_types.promql_metric_names(q.text):
                if _promql_target(name, log_metrics) is None:
                    problems.append(
                        f"{q.where}: PromQL metric {name} is neither a built-in metric "
                        "nor a declared google_logging_metric"
                    )
    assert not problems, "\n".join(problems)


def _promql_target(name: str, log_metrics: dict):
    """The metric a PromQL name stands for: (metric type, LogMetric or BuiltinMetric, suffix)."""
    candidates = {
        api_types.promql_name(t): (t, m) for t, m in list(log_metrics.items()) + list(api_types.BUILTIN_METRICS.items())
    }
    if name in candidates:
        return (*candidates[name], "")
    for suffix in api_types.DISTRIBUTION_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in candidates:
            return (*candidates[name[: -len(suffix)]], suffix)
    return None


def test_promql_names_map_back_to_declared_log_metrics(config, variant):
    """The refusal count's PromQL name (logging_googleapis_com:user_<prefix>_ingest_rejections_sum)
    is Monitoring's name of the declared ingest_rejections metric, a distribution (so `_sum` is
    its sum), and the labels the queries group by are the metric's labels or its resource's."""
    log_metrics = api_types.log_metrics(config, variant)
    seen = []
    for q in api_types.queries(config, variant):
        if q.kind != "promql":
            continue
        for name in api_types.promql_metric_names(q.text):
            target = _promql_target(name, log_metrics)
            assert target, f"{q.where}: {name} maps to no metric"
            metric_type, metric, suffix = target
            seen.append((metric_type, suffix))
            value_type = metric.value_type
            if suffix:
                assert value_type == "DISTRIBUTION", (
                    f"{q.where}: {name}: {suffix} needs a distribution, {metric_type} is {value_type}"
                )
            resource = re.search(r'monitored_resource="([^"]+)"', q.text)
            resource_labels = api_types.RESOURCE_LABELS.get(resource.group(1), frozenset()) if resource else frozenset()
            labels = metric.labels | resource_labels | {"monitored_resource"}
            for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", q.text):
                for label in (part.strip() for part in group.split(",") if part.strip()):
                    assert label in labels, (
                        f"{q.where}: groups by {label!r}, not a label of {metric_type} ({sorted(labels)})"
                    )
            for label in re.findall(r'(\w+)\s*=~?\s*"', re.sub(r"\[[^\]]*\]", "", q.text)):
                assert label in labels, f"{q.where}: matches on {label!r}, not a label of {metric_type} or its resource"
    rejected = [m for m in log_metrics.values() if m.address == "google_logging_metric.ingest_rejections"]
    if rejected:
        assert (rejected[0].metric_type, "_sum") in seen, "no PromQL query reads the ingest_rejections metric's sum"


def test_aggregations_suit_the_metric(config, variant):
    """Aligners and reducers as the Aggregation enums document them (kind and value type)."""
    rules = api_types.aggregation_rules()
    log_metrics = api_types.log_metrics(config, variant)
    problems = []
    for q in api_types.queries(config, variant):
        if q.kind != "filter":
            continue
        for metric in api_types.METRIC_TYPE.findall(q.text):
            m = api_types.BUILTIN_METRICS.get(metric)
            kind, value_type = (
                (m.kind, m.value_type)
                if m
                else ("DELTA", log_metrics[metric].value_type)
                if metric in log_metrics
                else (None, None)
            )
            if kind is None:
                continue  # reported by test_every_metric_named_exists
            if q.aligner and q.aligner in rules:
                kinds, types, result = rules[q.aligner]
                if kind not in kinds or value_type not in types:
                    problems.append(f"{q.where}: {q.aligner} does not apply to {metric} ({kind} {value_type})")
                value_type = result or value_type
                kind = "GAUGE" if q.aligner == "ALIGN_RATE" else kind
            if q.reducer and q.reducer != "REDUCE_NONE":
                if not q.aligner or q.aligner == "ALIGN_NONE":
                    problems.append(f"{q.where}: {q.reducer} needs a per-series aligner")
                elif q.reducer in rules:
                    kinds, types, _ = rules[q.reducer]
                    if value_type not in types:
                        problems.append(f"{q.where}: {q.reducer} does not apply to {value_type} values of {metric}")
    assert not problems, "\n".join(problems)


def test_labels_named_exist(config, variant):
    """Metric and resource labels in filters and groupByFields exist for that metric and its
    monitored resource (log-based metrics: the labels in their metric_descriptor)."""
    log_metrics = api_types.log_metrics(config, variant)
    problems = []
    for q in api_types.queries(config, variant):
        if q.kind != "filter":
            continue
        metric_labels, resource_labels = api_types.filter_labels(q.text + " " + " ".join(q.group_by))
        for metric in api_types.METRIC_TYPE.findall(q.text):
            m = api_types.BUILTIN_METRICS.get(metric)
            lm = log_metrics.get(metric)
            allowed = m.labels if m else lm.labels if lm else None
            if allowed is not None:
                for label in metric_labels - allowed:
                    problems.append(f"{q.where}: {metric} has no metric label {label!r} (has {sorted(allowed)})")
            resource = m.resource if m else api_types.resource_type_of(q.text)
            if resource and resource in api_types.RESOURCE_LABELS:
                for label in resource_labels - api_types.RESOURCE_LABELS[resource]:
                    problems.append(f"{q.where}: {resource} has no resource label {label!r}")
            rt = api_types.resource_type_of(q.text)
            if m and rt and rt != m.resource:
                problems.append(f"{q.where}: {metric} is written for {m.resource}, the filter asks for {rt}")
    assert not problems, "\n".join(problems)


def test_log_metrics_label_extractors_match_their_descriptors(config):
    for metric in api_types.log_metrics(config).values():
        assert set(metric.label_extractors) == set(metric.labels), (
            f"{metric.address}: label_extractors {sorted(metric.label_extractors)} and metric_descriptor labels "
            f"{sorted(metric.labels)} must name the same labels"
        )
        if metric.value_type == "DISTRIBUTION":
            assert metric.value_extractor, f"{metric.address}: a DISTRIBUTION needs a value_extractor"


# --------------------------------------------------------------------------------------
# Log events
# --------------------------------------------------------------------------------------


def _events_named(q: api_types.Query) -> list[str]:
    return [a or b for a, b in api_types.EVENT_FILTER.findall(q.text)]


def test_code_log_events_are_found(calls):
    """The scan of omi_receiver/runtime finds the structured logger's calls (it would pass
    vacuously otherwise), including the constant rejections.EVENT."""
    events = {c.event for c in calls if not c.is_pattern}
    rejections = (api_types.RUNTIME / "ingest" / "rejections.py").read_text()
    constant = re.search(r'^EVENT = "(\w+)"', rejections, re.M)
    assert constant, "omi_receiver/runtime/ingest/rejections.py has no EVENT constant any more"
    assert constant.group(1) in events
    assert len(events) >= 5


def test_log_events_filtered_on_are_written_by_the_code(config, calls):
    problems, seen = [], 0
    for q in api_types.queries(config):
        for event in _events_named(q):
            seen += 1
            if not any(c.matches(event) for c in calls):
                known = sorted({c.event for c in calls if not c.is_pattern})
                problems.append(
                    f"{q.where}: filters on jsonPayload.event={event!r}, which omi_receiver/runtime never logs "
                    f"(it logs {known})"
                )
    assert seen, "no jsonPayload.event filter found in infra/"
    assert not problems, "\n".join(problems)


def test_fields_extracted_are_written_with_the_event(config, calls):
    """A log-based metric EXTRACTs jsonPayload fields of the lines of its event: every call
    that writes the event writes those fields (or passes **fields, which may)."""
    problems = []
    for metric in api_types.log_metrics(config).values():
        events = [a or b for a, b in api_types.EVENT_FILTER.findall(metric.filter)]
        extractors = [metric.value_extractor or ""] + list(metric.label_extractors.values())
        fields = {f.split(".")[0] for e in extractors for f in re.findall(r"jsonPayload\.([\w.]+)", e)}
        for event in events:
            writers = [c for c in calls if c.matches(event) and not c.is_pattern]
            for call in writers:
                missing = fields - call.fields
                if missing and not call.open_fields:
                    problems.append(
                        f"{metric.address} extracts {sorted(missing)} from {event!r} lines, "
                        f"but {call.file}:{call.line} writes none"
                    )
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------
# The evaluator, on the HCL constructs infra/ uses
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, expected",
    [
        ('"a${1 + 2}b"', "a3b"),
        ('"$${x} %%{y}"', "${x} %{y}"),
        ('"q\\"\\n"', 'q"\n'),
        ("<<-EOT\n    one ${2 * 3}\n      two\n    EOT", "one 6\n  two\n"),
        (
            '[for i, w in ["a", "b", "c"] : '
            "merge({n = w}, i % 2 == 1 ? {odd = true} : {}, i >= 2 ? {y = floor(i / 2) * 4} : {})]",
            [{"n": "a"}, {"n": "b", "odd": True}, {"n": "c", "y": 4}],
        ),
        ("{for k, v in {a = 1, b = 2} : v => k}", {"1": "a", "2": "b"}),
        ('format("x %s [%s]", "y", "5m")', "x y [5m]"),
        ('replace("user/omi/chunk_rejected", "/[^a-zA-Z0-9_]/", "_")', "user_omi_chunk_rejected"),
        ('replace("a.b+c", "/([.+])/", "[$1]")', "a[.]b[+]c"),
        ('jsonencode({b = [1, "x"], a = null})', '{"a":null,"b":[1,"x"]}'),
        ("[{n = 1}, {n = 2}][*].n", [1, 2]),
        ('"%{if true}y%{else}n%{endif}%{for x in [1, 2]}${x}%{endfor}"', "y12"),
        ('tonumber(regex("^[0-9]+", "512Mi")) * (endswith("512Mi", "Gi") ? 1073741824 : 1048576)', 536870912),
    ],
)
def test_evaluator(src, expected):
    node = hcl_eval.parse_expression(src)
    assert hcl_eval.Evaluator(hcl_eval.Resolver()).eval(node) == expected


def test_references_leave_out_bound_names():
    node = hcl_eval.parse_expression(
        '{for k, sa in google_service_account.this : k => "serviceAccount:${sa.email}" if local.on[k]}'
    )
    assert [r.text() for r in hcl_eval.references(node)] == ["google_service_account.this", "local.on[...]"]
    node = hcl_eval.parse_expression("google_pubsub_topic.chunks[count.index].name")
    assert [r.text() for r in hcl_eval.references(node)] == ["google_pubsub_topic.chunks[...].name", "count.index"]
