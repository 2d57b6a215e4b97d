"""The Grafana dashboards as data: their InfluxQL queries, the schema they may use, and Grafana's substitutions.

Used by tests/test_dashboards.py. Everything here is pure (no server): reading the dashboard JSON files,
listing every panel, annotation and template-variable query, checking each against the measurements,
tags and fields of ``docs/influxdb-schema.md``, and rendering a query the way Grafana does before it
sends it to InfluxDB (``$timeFilter``, ``$__interval``, dashboard variables).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "dashboards" / "grafana" / "dashboards"
PROVISIONING_DIR = ROOT / "dashboards" / "grafana" / "provisioning"
SCHEMA_DOC = ROOT / "docs" / "influxdb-schema.md"
DATASOURCE_UID = "jointmon-influxdb"

# Grafana's own macros in InfluxQL queries.
MACROS = {"timeFilter", "__interval", "__interval_ms"}


@dataclass(frozen=True)
class Query:
    """One InfluxQL query of a dashboard: a panel target, an annotation or a template variable."""

    dashboard: str  # dashboard uid
    kind: str  # "panel", "annotation" or "variable"
    title: str  # panel title, annotation name or variable name
    ref: str  # the target's refId ("" for annotations and variables)
    text: str
    result_format: str = "time_series"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.dashboard, self.kind, self.title, self.ref


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` dashboard of the directory by file name."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))}


def _variable_query(var: Mapping[str, Any]) -> str:
    q = var.get("query", "")
    return str(q.get("query", "")) if isinstance(q, Mapping) else str(q)  # newer Grafana stores {query, refId}


def dashboard_queries(dash: Mapping[str, Any]) -> Iterator[Query]:
    """Every InfluxQL query of a dashboard (panels, including panels inside collapsed rows, annotations, variables)."""
    uid = dash["uid"]
    panels = list(dash.get("panels", []))
    for row in dash.get("panels", []):
        panels.extend(row.get("panels", []))
    for panel in panels:
        for t in panel.get("targets", []):
            yield Query(uid, "panel", panel["title"], t.get("refId", ""), t.get("query", ""),
                        t.get("resultFormat", "time_series"))
    for anno in dash.get("annotations", {}).get("list", []):
        if anno.get("builtIn"):
            continue
        text = anno.get("target", {}).get("query") or anno.get("query", "")
        yield Query(uid, "annotation", anno["name"], "", text, "table")
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            yield Query(uid, "variable", var["name"], "", _variable_query(var), "table")


def variable_names(dash: Mapping[str, Any]) -> set[str]:
    return {v["name"] for v in dash.get("templating", {}).get("list", [])}


# ------------------------------------------------------------------------------------------ schema
@dataclass(frozen=True)
class Measurement:
    tags: frozenset[str]
    fields: frozenset[str]


def load_schema(path: Path = SCHEMA_DOC) -> dict[str, Measurement]:
    """Measurements, tags and fields as documented: a ``### `name`...`` heading each, then a ``Tags:`` line
    (the first backticked list) and the fields as a table (``| `field` | ...``) or a ``Fields `a`, `b` ...``
    sentence (parenthesised value lists are not field names)."""
    text = path.read_text(encoding="utf-8")
    out: dict[str, Measurement] = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        name = re.match(r"`([^`]+)`", block)
        if name is None:
            continue
        # "Tags: `a, b` with ..." or "Tags: `component` (`analysis`, ...), `host`": the chain of backticked
        # names right after "Tags:", value lists in parentheses left out.
        tags_m = re.search(r"Tags:\s*((?:`[^`]+`\s*(?:,\s*)?)+)", re.sub(r"\s*\([^()]*\)", "", block))
        tags = {t.strip() for group in re.findall(r"`([^`]+)`", tags_m.group(1)) for t in group.split(",")} \
            if tags_m else set()
        fields = set(re.findall(r"^\|\s*`([^`]+)`", block, flags=re.M))
        for row in re.findall(r"^\|\s*(`[^|]+)\|", block, flags=re.M):  # "| `clicks`, `snaps`, `crepitus` |"
            fields.update(re.findall(r"`([^`]+)`", row))
        sentence = re.search(r"Fields\s+(`.*?)(?:\n\n|$)", block, flags=re.S)
        if sentence:
            without_values = re.sub(r"\([^()]*\)", "", sentence.group(1))
            fields.update(w for w in re.findall(r"`([^`]+)`", without_values) if not w.startswith("e.g"))
        if "pipeline_health" in name.group(1):
            fields.update(re.findall(r"`(\w+)`", block.split("Integer fields", 1)[-1]))
        out[name.group(1)] = Measurement(frozenset(tags), frozenset(fields))
    return out


# ------------------------------------------------------------------------------------- identifiers
_TOKEN = re.compile(r"""
    (?P<qid>"(?:[^"\\]|\\.)*")
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<regex>/(?:[^/\\\n]|\\.)*/)
  | (?P<var>\$\{\w+\}|\$\w+|\[\[\w+\]\])
  | (?P<num>\d+(?:\.\d+)?(?:ns|us|u|ms|s|m|h|d|w)?\b)
  | (?P<word>[A-Za-z_]\w*)
  | (?P<op>=~|!~|!=|<>|>=|<=|[=<>(),*;+\-])
  | (?P<ws>\s+)
""", re.X)

KEYWORDS = {"select", "from", "where", "and", "or", "group", "by", "order", "desc", "asc", "limit", "slimit",
            "offset", "fill", "null", "none", "previous", "linear", "as", "show", "tag", "values", "with", "key",
            "time", "not", "in", "measurements", "field", "keys", "true", "false", "now", "tz"}
FUNCTIONS = {"mean", "median", "max", "min", "last", "first", "count", "sum", "spread", "distinct", "stddev",
             "percentile", "mode", "integral", "difference", "derivative", "non_negative_derivative",
             "moving_average", "cumulative_sum", "abs", "round", "floor", "ceil"}


def tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) tokens of an InfluxQL statement; ValueError at a character it cannot read."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read the query at {text[pos:pos + 20]!r}")
        if m.lastgroup != "ws":
            out.append((str(m.lastgroup), m.group()))
        pos = m.end()
    return out


def _unquote(qid: str) -> str:
    return re.sub(r"\\(.)", r"\1", qid[1:-1])


def schema_problems(query: str, schema: Mapping[str, Measurement], variables: set[str]) -> list[str]:
    """What in ``query`` is not in the schema: measurements, tags and fields (double-quoted, as the dashboards
    must write every identifier), bare words that are neither InfluxQL keywords nor functions (an unquoted
    identifier would escape this check), GROUP BY / WITH KEY names that are not tags, and unknown
    ``$variables``."""
    try:
        toks = tokens(query)
    except ValueError as exc:
        return [str(exc)]
    problems: list[str] = []
    measurements: list[str] = []
    aliases: set[str] = set()
    names: list[tuple[str, str]] = []  # (identifier, role) role: "name" or "tag"
    prev = ""
    depth = 0
    group_by_depth: int | None = None  # paren depth of an open GROUP BY clause
    for i, (kind, text) in enumerate(toks):
        low = text.lower()
        if kind == "word":
            if low not in KEYWORDS and low not in FUNCTIONS:
                problems.append(f"unquoted identifier or unknown word {text!r}")
            if low == "by" and prev == "group":
                group_by_depth = depth
            elif low in ("fill", "order", "limit", "slimit", "offset", "tz") and group_by_depth == depth:
                group_by_depth = None
        elif kind == "op" and text == "(":
            depth += 1
        elif kind == "op" and text == ")":
            depth -= 1
            if group_by_depth is not None and depth < group_by_depth:
                group_by_depth = None
        elif kind == "var":
            name = text.strip("${}[]")
            if name not in MACROS and name not in variables:
                problems.append(f"unknown variable {text}")
        elif kind == "regex":
            problems.extend(f"unknown variable ${v} in {text}" for v in re.findall(r"\$(\w+)", text)
                            if v not in variables and v not in MACROS)
        elif kind == "qid":
            ident = _unquote(text)
            if prev == "from":
                measurements.append(ident)
            elif prev == "as":
                aliases.add(ident)
            elif group_by_depth is not None or (prev == "=" and i >= 2 and toks[i - 2][1].lower() == "key"):
                names.append((ident, "tag"))
            else:
                names.append((ident, "name"))
        prev = low if kind in ("word", "op") else kind
    if not measurements:
        problems.append("no FROM \"measurement\"")
    unknown = [m for m in measurements if m not in schema]
    problems.extend(f"measurement {m!r} is not in docs/influxdb-schema.md" for m in unknown)
    known = [schema[m] for m in measurements if m in schema]
    tags = set().union(*(m.tags for m in known)) if known else set()
    fields = set().union(*(m.fields for m in known)) if known else set()
    for ident, role in names:
        if role == "tag" and ident not in tags and ident not in aliases:
            problems.append(f"{ident!r} is not a tag of {measurements}")
        elif role == "name" and ident not in tags | fields | aliases:
            problems.append(f"{ident!r} is neither a tag nor a field of {measurements} in docs/influxdb-schema.md")
    return problems


# --------------------------------------------------------------------------------------- rendering
def grafana_interval_ms(range_ms: float, max_data_points: int = 1000) -> int:
    """``$__interval`` as Grafana computes it: range / resolution, rounded to a "nice" step (kbn.roundInterval)."""
    raw = range_ms / max_data_points
    steps = [(15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
             (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
             (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
             (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
             (32400000, 21600000), (86400000, 43200000)]
    for limit, step in steps:
        if raw < limit:
            return step
    return 86400000


def escape_regex(value: str) -> str:
    """Grafana's escapeRegex: a variable value put inside an InfluxQL ``/regex/``."""
    return re.sub(r"[\\^$*+?.()|[\]{}/]", lambda m: "\\" + m.group(), value)


def render(query: str, values: Mapping[str, str | list[str]], t0_ms: int, t1_ms: int, interval_ms: int,
           all_values: Mapping[str, str] | None = None) -> str:
    """``query`` as Grafana sends it: ``$timeFilter`` -> ``time >= T0ms and time <= T1ms`` (its backend's form),
    ``$__interval`` -> e.g. ``200ms``, each ``$var`` / ``${var}`` / ``[[var]]`` -> its regex-escaped value
    (several values -> ``(a|b)``; the string ``"$__all"`` -> the variable's ``allValue``)."""
    out = query.replace("$timeFilter", f"time >= {t0_ms}ms and time <= {t1_ms}ms")
    out = out.replace("$__interval_ms", str(interval_ms)).replace("$__interval", f"{interval_ms}ms")
    for name in sorted(values, key=len, reverse=True):  # $session before $sess
        value = values[name]
        if value == "$__all":
            text = (all_values or {})[name]
        elif isinstance(value, list):
            text = "(" + "|".join(escape_regex(v) for v in value) + ")" if len(value) > 1 else escape_regex(value[0])
        else:
            text = escape_regex(value)
        out = re.sub(r"\$\{" + name + r"\}|\[\[" + name + r"\]\]|\$" + name + r"\b", lambda _m, t=text: t, out)
    return out


# ----------------------------------------------------------------------------- what went into InfluxDB
@dataclass(frozen=True)
class Point:
    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, Any]
    t_ns: int


def _split_unescaped(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    """Split at ``sep`` not escaped by a backslash (nor, with ``quotes``, inside a double-quoted string)."""
    parts, cur, i, quoted = [], [], 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if quotes and ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([,= \\\"])", r"\1", text)


def _field_value(text: str) -> Any:
    if text.startswith('"'):
        return re.sub(r'\\(["\\])', r"\1", text[1:-1])
    if text in ("true", "t", "T", "True", "TRUE"):
        return True
    if text in ("false", "f", "F", "False", "FALSE"):
        return False
    if text.endswith("i"):
        return int(text[:-1])
    return float(text)


def parse_line(text: str) -> Point:
    """One line of InfluxDB line protocol (escapes undone, ints as int, floats as float) with its ns timestamp."""
    head, fields_text, t = _split_unescaped(text.strip(), " ", quotes=True)
    key = _split_unescaped(head, ",")
    tags = dict(_split_unescaped(kv, "=") for kv in key[1:])
    fields = dict(_split_unescaped(kv, "=", quotes=True) for kv in _split_unescaped(fields_text, ",", quotes=True))
    return Point(_unescape(key[0]), {_unescape(k): _unescape(v) for k, v in tags.items()},
                 {_unescape(k): _field_value(v) for k, v in fields.items()}, int(t))


def merged(points: list[Point]) -> list[Point]:
    """What InfluxDB keeps of ``points`` written in this order: one point per series and timestamp, whose
    fields are the union of the writes, a later value replacing an earlier one."""
    keep: dict[tuple[str, tuple[tuple[str, str], ...], int], dict[str, Any]] = {}
    for p in points:
        keep.setdefault((p.measurement, tuple(sorted(p.tags.items())), p.t_ns), {}).update(p.fields)
    return [Point(m, dict(tags), fields, t) for (m, tags, t), fields in keep.items()]
