"""What Terraform hands to Google's APIs as JSON or YAML, checked against the APIs' own types.

* The dashboard: `google_monitoring_dashboard.*.dashboard_json` is a `jsonencode(...)` of HCL;
  it is rendered with hcl_eval (variables at their defaults unless overridden, locals and
  the arguments of other resources evaluated, values only known after apply as placeholder
  strings) and parsed into the Monitoring API's `Dashboard` message
  (google-cloud-monitoring-dashboards, google.cloud.monitoring_dashboard_v1.types) with
  protobuf's json_format, which refuses unknown fields and wrong types.
* cloudbuild.yaml is parsed into Cloud Build's `Build` message (google-cloud-build,
  google.cloud.devtools.cloudbuild_v1.types) the same way.
* Metrics: the metric types named by filters (`metric.type="..."`) and PromQL queries of the
  dashboard and the alert policies, resolved to the built-in metrics below or to the
  declared `google_logging_metric` resources; aligners and reducers checked against the
  metric's kind and value type as the `Aggregation` enums' own documentation states them.
* Log events: every `jsonPayload.event="x"` the log-based metrics, exclusions, alerts and
  dashboard filter on (or tell the reader to filter on) is an event the code writes
  (`logs.info/warning/error("x", ...)` in omi_receiver/runtime, constants such as
  rejections.EVENT resolved), and the fields a metric EXTRACTs are fields those calls write.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import tf_config
import yaml
from google.protobuf import json_format

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "omi_receiver" / "runtime"


# --------------------------------------------------------------------------------------
# Built-in metrics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinMetric:
    kind: str  # GAUGE, DELTA, CUMULATIVE
    value_type: str  # INT64, DOUBLE, DISTRIBUTION, BOOL, STRING
    resource: str  # monitored resource type
    labels: frozenset


# The metric types infra/ uses, as Google's metric lists describe them: "Google Cloud
# metrics", https://cloud.google.com/monitoring/api/metrics_gcp_p_z, sections "run" (Cloud
# Run, which also reports Cloud Run functions: the index page
# https://cloud.google.com/monitoring/api/metrics_gcp says their metric types are generated
# by Cloud Run) and "pubsub" (the same generated table is served at
# https://documentation.s3ns.fr/monitoring/api/metrics_gcp_p_z). Kind, value type, monitored
# resource and metric labels per entry. A metric added to infra/ must be added here, from
# that list.
BUILTIN_METRICS = {
    # "Number of requests reaching the revision." DELTA, INT64, 1; labels response_code,
    # response_code_class, route_type.
    "run.googleapis.com/request_count": BuiltinMetric(
        "DELTA", "INT64", "cloud_run_revision", frozenset({"response_code", "response_code_class", "route_type"})
    ),
    # "Distribution of request latency in milliseconds reaching the revision." DELTA,
    # DISTRIBUTION, ms; same labels.
    "run.googleapis.com/request_latencies": BuiltinMetric(
        "DELTA", "DISTRIBUTION", "cloud_run_revision", frozenset({"response_code", "response_code_class", "route_type"})
    ),
    # "Number of container instances that exist, broken down by state." GAUGE, INT64.
    "run.googleapis.com/container/instance_count": BuiltinMetric(
        "GAUGE", "INT64", "cloud_run_revision", frozenset({"state"})
    ),
    # "Number of unacknowledged messages (a.k.a. backlog messages) in a subscription." GAUGE, INT64.
    "pubsub.googleapis.com/subscription/num_undelivered_messages": BuiltinMetric(
        "GAUGE", "INT64", "pubsub_subscription", frozenset()
    ),
    # "Age (in seconds) of the oldest unacknowledged message in a subscription." GAUGE, INT64, s.
    "pubsub.googleapis.com/subscription/oldest_unacked_message_age": BuiltinMetric(
        "GAUGE", "INT64", "pubsub_subscription", frozenset()
    ),
}

# Labels of the monitored resources (https://cloud.google.com/monitoring/api/resources).
RESOURCE_LABELS = {
    "cloud_run_revision": frozenset({"project_id", "service_name", "revision_name", "location", "configuration_name"}),
    "pubsub_subscription": frozenset({"project_id", "subscription_id"}),
}

LOG_METRIC_PREFIX = "logging.googleapis.com/user/"


def promql_name(metric_type: str) -> str:
    """Monitoring's PromQL name of a metric type: the first "/" becomes ":", every other
    character PromQL does not allow becomes "_" ("Mapping Cloud Monitoring metrics to
    PromQL", https://cloud.google.com/monitoring/promql/promql-mapping)."""
    domain, _, path = metric_type.partition("/")
    return re.sub(r"[^a-zA-Z0-9_]", "_", domain) + ":" + re.sub(r"[^a-zA-Z0-9_]", "_", path)


# Distribution-valued metrics are queried like Prometheus histograms (same page).
DISTRIBUTION_SUFFIXES = ("_sum", "_count", "_bucket")


# -- what the Aggregation enums' documentation says each aligner and reducer accepts ----


@functools.cache
def aggregation_rules() -> dict[str, tuple[frozenset, frozenset, str | None]]:
    """ALIGN_x / REDUCE_x -> (metric kinds, value types, result value type or None for
    "same as the input"), read from the docstrings of the Aligner and Reducer enums of
    google.cloud.monitoring_dashboard_v1.types.Aggregation (the API's own reference text:
    "This aligner is valid for GAUGE and DELTA metrics with numeric values ... The
    value_type of the aligned result is DOUBLE"). Operations whose text names no rule are
    left out (not checked)."""
    from google.cloud.monitoring_dashboard_v1.types import Aggregation

    rules = {}
    for enum in (Aggregation.Aligner, Aggregation.Reducer):
        doc = re.sub(r"\[(\w+)\]\[[\w.]+\]", r"\1", enum.__doc__ or "")
        for m in re.finditer(
            r"\n\s+((?:ALIGN|REDUCE)_\w+) \(\d+\):\n(.*?)(?=\n\s+(?:ALIGN|REDUCE)_\w+ \(\d+\):|\Z)", doc, re.S
        ):
            name, body = m.group(1), " ".join(m.group(2).split()).replace("``", "")
            valid = re.search(r"(?:aligner|alignment|reducer|reduction) is valid for (.*?)(?:\.|$)", body, re.I)
            if not valid:
                continue
            text = valid.group(1)
            kinds = frozenset(k for k in ("GAUGE", "DELTA", "CUMULATIVE") if k in text)
            types: set[str] = set()
            if "numeric" in text:
                types |= {"INT64", "DOUBLE"}
            if "distribution" in text.lower():
                types.add("DISTRIBUTION")
            if "Boolean" in text or "BOOL" in text:
                types.add("BOOL")
            if "string" in text.lower():
                types.add("STRING")
            if not types:
                types = {"INT64", "DOUBLE", "DISTRIBUTION", "BOOL", "STRING", "MONEY"}
            result = None
            r = re.search(r"value_type of the (?:aligned result|output|result) is (\w+)", body)
            if r and r.group(1) in ("DOUBLE", "INT64", "BOOL", "DISTRIBUTION"):
                result = r.group(1)
            rules[name] = (kinds, frozenset(types), result)
    return rules


# --------------------------------------------------------------------------------------
# Rendering and parsing
# --------------------------------------------------------------------------------------


def dashboards(config: tf_config.Config, overrides: dict | None = None) -> dict[str, dict]:
    """Every google_monitoring_dashboard's dashboard_json, rendered: address -> JSON object."""
    resolver = tf_config.ConfigResolver(config, overrides)
    out = {}
    for (rtype, name), block in config.resources.items():
        if rtype == "google_monitoring_dashboard" and "dashboard_json" in block.attributes:
            text = resolver.evaluate(block.attributes["dashboard_json"])
            out[f"{rtype}.{name}"] = json.loads(text)
    return out


def parse_message(message_class, data: dict):
    """`data` (the API's JSON form) as a proto-plus class's underlying protobuf message;
    unknown fields and wrong types raise json_format.ParseError."""
    return json_format.ParseDict(data, message_class.pb()(), ignore_unknown_fields=False)


def parse_dashboard(data: dict):
    from google.cloud.monitoring_dashboard_v1.types import Dashboard

    return parse_message(Dashboard, data)


def parse_cloudbuild(path: Path):
    from google.cloud.devtools.cloudbuild_v1.types import Build

    with Path(path).open() as fh:
        data = yaml.safe_load(fh)
    return parse_message(Build, data)


def walk_strings(value, key_names: set[str], path: str = ""):
    """(path, string) for every string under a key in key_names, anywhere in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else k
            if k in key_names and isinstance(v, str):
                yield here, v
            else:
                yield from walk_strings(v, key_names, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_strings(v, key_names, f"{path}[{i}]")


def walk_dicts(value, path: str = ""):
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from walk_dicts(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_dicts(v, f"{path}[{i}]")


# --------------------------------------------------------------------------------------
# Monitoring queries of the configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str  # address and path, for messages
    kind: str  # "filter" (Monitoring filter), "promql", "log" (Logging filter), "text"
    text: str
    aligner: str | None = None
    reducer: str | None = None
    group_by: tuple = ()


@dataclass(frozen=True)
class LogMetric:
    address: str
    name: str  # the metric's name, as evaluated
    filter: str
    value_type: str
    labels: frozenset  # metric_descriptor labels' keys
    label_extractors: dict
    value_extractor: str | None

    @property
    def metric_type(self) -> str:
        return LOG_METRIC_PREFIX + self.name


def _str(value) -> str:
    import hcl_eval

    return hcl_eval.to_template_string(value)


def log_metrics(config: tf_config.Config, overrides: dict | None = None) -> dict[str, LogMetric]:
    """Declared google_logging_metric resources, evaluated: metric type -> LogMetric."""
    resolver = tf_config.ConfigResolver(config, overrides)
    out = {}
    for (rtype, name), block in config.resources.items():
        if rtype != "google_logging_metric":
            continue
        a = block.attributes
        value_type, labels = "INT64", set()
        for md in block.blocks_named("metric_descriptor"):
            if "value_type" in md.attributes:
                value_type = resolver.evaluate(md.attributes["value_type"])
            for lb in md.blocks_named("labels"):
                labels.add(resolver.evaluate(lb.attributes["key"]))
        extractors = resolver.evaluate(a["label_extractors"]) if "label_extractors" in a else {}
        metric = LogMetric(
            f"{rtype}.{name}",
            _str(resolver.evaluate(a["name"])),
            _str(resolver.evaluate(a["filter"])) if "filter" in a else "",
            value_type,
            frozenset(labels),
            dict(extractors),
            _str(resolver.evaluate(a["value_extractor"])) if "value_extractor" in a else None,
        )
        out[metric.metric_type] = metric
    return out


def queries(config: tf_config.Config, overrides: dict | None = None) -> list[Query]:
    """Every Monitoring filter, PromQL query and Logging filter infra/ writes, evaluated;
    plus the alert documentation texts (which tell the reader what to filter on)."""
    resolver = tf_config.ConfigResolver(config, overrides)
    out: list[Query] = []
    for address, dash in dashboards(config, overrides).items():
        for path, d in walk_dicts(dash):
            if isinstance(d.get("filter"), str) and (
                "timeSeriesFilter" in path.rsplit(".", 1)[-1] or path.endswith("timeSeriesFilter")
            ):
                agg = d.get("aggregation", {})
                out.append(
                    Query(
                        f"{address}: {path}.filter",
                        "filter",
                        d["filter"],
                        agg.get("perSeriesAligner"),
                        agg.get("crossSeriesReducer"),
                        tuple(agg.get("groupByFields", ())),
                    )
                )
            if isinstance(d.get("prometheusQuery"), str):
                out.append(Query(f"{address}: {path}.prometheusQuery", "promql", d["prometheusQuery"]))
            if isinstance(d.get("timeSeriesQueryLanguage"), str):
                out.append(Query(f"{address}: {path}.timeSeriesQueryLanguage", "mql", d["timeSeriesQueryLanguage"]))
    for (rtype, name), block in config.resources.items():
        address = f"{rtype}.{name}"
        if rtype == "google_monitoring_alert_policy":
            for cond in block.blocks_named("conditions"):
                for ct in cond.blocks_named("condition_threshold") + cond.blocks_named("condition_absent"):
                    aligner = reducer = None
                    group_by: tuple = ()
                    for agg in ct.blocks_named("aggregations"):
                        if "per_series_aligner" in agg.attributes:
                            aligner = resolver.evaluate(agg.attributes["per_series_aligner"])
                        if "cross_series_reducer" in agg.attributes:
                            reducer = resolver.evaluate(agg.attributes["cross_series_reducer"])
                        if "group_by_fields" in agg.attributes:
                            group_by = tuple(resolver.evaluate(agg.attributes["group_by_fields"]))
                    if "filter" in ct.attributes:
                        out.append(
                            Query(
                                f"{address}: conditions.{ct.type}.filter",
                                "filter",
                                _str(resolver.evaluate(ct.attributes["filter"])),
                                aligner,
                                reducer,
                                group_by,
                            )
                        )
                for pq in cond.blocks_named("condition_prometheus_query_language"):
                    out.append(
                        Query(
                            f"{address}: conditions.condition_prometheus_query_language.query",
                            "promql",
                            _str(resolver.evaluate(pq.attributes["query"])),
                        )
                    )
                for ml in cond.blocks_named("condition_matched_log"):
                    out.append(
                        Query(
                            f"{address}: conditions.condition_matched_log.filter",
                            "log",
                            _str(resolver.evaluate(ml.attributes["filter"])),
                        )
                    )
            for doc in block.blocks_named("documentation"):
                if "content" in doc.attributes:
                    out.append(
                        Query(
                            f"{address}: documentation.content",
                            "text",
                            _str(resolver.evaluate(doc.attributes["content"])),
                        )
                    )
        elif (
            rtype in ("google_logging_metric", "google_logging_project_exclusion", "google_logging_project_sink")
            and "filter" in block.attributes
        ):
            out.append(Query(f"{address}: filter", "log", _str(resolver.evaluate(block.attributes["filter"]))))
    return out


METRIC_TYPE = re.compile(r'metric\.type\s*=\s*"([^"]+)"')
EVENT_FILTER = re.compile(r'jsonPayload\.event\s*=\s*"([^"\\]+)"|jsonPayload\.event\s*=\s*\\"([^"\\]+)\\"')
PROMQL_METRIC = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+)")


def promql_metric_names(query: str) -> list[str]:
    """Metric names in a PromQL query (Monitoring's names all hold a ':'), outside strings
    and range selectors."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)
    return PROMQL_METRIC.findall(stripped)


def filter_labels(text: str) -> tuple[set[str], set[str]]:
    """(metric labels, resource labels) a Monitoring filter or groupByFields names."""
    metric = set(re.findall(r"\bmetric\.labels?\.(\w+)", text))
    resource = set(re.findall(r"\bresource\.labels?\.(\w+)", text))
    return metric, resource


def resource_type_of(text: str) -> str | None:
    m = re.search(r'resource\.type\s*=\s*"([^"]+)"', text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------
# Log events the code writes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogCall:
    event: str  # the event name, or a regex for an f-string
    is_pattern: bool
    file: str
    line: int
    fields: frozenset  # keyword arguments
    open_fields: bool  # **kwargs passed: more fields possible

    def matches(self, event: str) -> bool:
        return bool(re.fullmatch(self.event, event)) if self.is_pattern else self.event == event


_LOG_FUNCS = {"info", "warning", "error", "debug", "critical", "log"}


def log_calls(root: Path = RUNTIME) -> list[LogCall]:
    """Every call of the runtime's structured logger (omi_receiver/runtime/logs.py):
    `logs.<severity>(event, **fields)` or `logs.log(severity, event, **fields)`, with the
    event resolved from a literal, a module constant (such as rejections.EVENT) or an
    f-string (as a pattern)."""
    files = sorted(p for p in root.rglob("*.py") if p.name != "logs.py" or p.parent != root)
    constants: dict[str, dict[str, str]] = {}
    trees = {}
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        trees[path] = tree
        consts = {}
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        consts[target.id] = node.value.value
        constants[str(path)] = consts
    all_consts: dict[str, set] = {}
    for consts in constants.values():
        for k, v in consts.items():
            all_consts.setdefault(k, set()).add(v)

    out: list[LogCall] = []
    for path, tree in trees.items():
        consts = constants[str(path)]
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            f = node.func
            if not (isinstance(f.value, ast.Name) and f.value.id == "logs" and f.attr in _LOG_FUNCS):
                continue
            args = node.args[1:] if f.attr == "log" else node.args
            if not args:
                continue
            arg = args[0]
            event, pattern = None, False
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                event = arg.value
            elif isinstance(arg, ast.Name):
                if arg.id in consts:
                    event = consts[arg.id]
                elif len(all_consts.get(arg.id, ())) == 1:
                    event = next(iter(all_consts[arg.id]))
            elif isinstance(arg, ast.JoinedStr):
                parts = []
                for v in arg.values:
                    if isinstance(v, ast.Constant):
                        parts.append(re.escape(str(v.value)))
                    else:
                        parts.append(".+")
                event, pattern = "".join(parts), True
            if event is None:
                continue
            fields = frozenset(k.arg for k in node.keywords if k.arg)
            open_fields = any(k.arg is None for k in node.keywords)
            out.append(LogCall(event, pattern, str(path.relative_to(REPO)), node.lineno, fields, open_fields))
    return out
