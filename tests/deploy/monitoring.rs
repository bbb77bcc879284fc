//! `deploy/grafana/` and `deploy/prometheus/`: the dashboard and the alert
//! rules parse, are complete (every panel titled and queried, every alert
//! with `for`, a severity and a summary), and query only metrics and labels
//! the code records (read from `src/`); `promtool check rules` too, where
//! installed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::LazyLock;

use serde_json::Value as Json;

use crate::files::{deploy_dir, files_under, read, yaml};
use crate::flags::Findings;

/// What the code records, read from `src/`: every metric name (a
/// `"revocd_..."` string literal), the histograms among them (recorded
/// with `histogram!`, so Prometheus also has `_bucket`, `_sum` and
/// `_count`), and every label name given to a metrics macro.
#[derive(Debug, Default)]
struct RecordedMetrics {
    names: BTreeSet<String>,
    histograms: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// Labels Prometheus itself adds: the target's, and a histogram's bucket.
const PROMETHEUS_LABELS: [&str; 3] = ["instance", "job", "le"];

static RECORDED: LazyLock<RecordedMetrics> = LazyLock::new(|| {
    let mut recorded = RecordedMetrics::default();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for path in files_under(&src) {
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("reading src/");
        recorded.add_source(&text);
    }
    assert!(
        recorded.names.len() >= 20 && !recorded.histograms.is_empty(),
        "no metric names found in src/: {recorded:?}"
    );
    recorded
});

impl RecordedMetrics {
    fn add_source(&mut self, text: &str) {
        for (at, _) in text.match_indices("\"revocd_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if text[at + 1 + name.len()..].starts_with('"') {
                self.names.insert(name);
            }
        }
        for kind in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(kind) {
                let call = macro_arguments(&text[at + kind.len()..]);
                if kind == "histogram!(" {
                    if let Some(name) = string_literals(call).first() {
                        self.histograms.insert(name.clone());
                    }
                }
                // `"label" => value` pairs.
                for (arrow, _) in call.match_indices("=>") {
                    if let Some(label) = string_literals(&call[..arrow]).pop() {
                        self.labels.insert(label);
                    }
                }
            }
        }
    }

    /// The label names a query may use.
    fn knows_label(&self, label: &str) -> bool {
        self.labels.contains(label) || PROMETHEUS_LABELS.contains(&label)
    }
}

/// The text up to the parenthesis that closes a macro call.
fn macro_arguments(text: &str) -> &str {
    let mut depth = 0;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return &text[..at],
            ')' => depth -= 1,
            _ => {}
        }
    }
    text
}

/// The contents of the `"..."` literals in `text` (no escapes needed).
fn string_literals(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `revocd_*` metric names a PromQL expression reads.
fn promql_metrics(expr: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for (at, _) in expr.match_indices("revocd_") {
        if expr[..at].chars().next_back().is_some_and(is_word_char) {
            continue;
        }
        let end = expr[at..]
            .find(|c: char| !is_word_char(c))
            .map_or(expr.len(), |len| at + len);
        found.push(&expr[at..end]);
    }
    found
}

/// The label names a PromQL expression uses: in selectors (`{a="x"}`) and
/// in `by`, `without`, `on`, `ignoring` and `group_*` clauses.
fn promql_labels(expr: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("a closed selector") + open;
        for matcher in rest[open + 1..close].split(',') {
            let name = matcher.split(['=', '!']).next().unwrap_or_default().trim();
            if !name.is_empty() {
                found.push(name.to_owned());
            }
        }
        rest = &rest[close..];
    }
    for keyword in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        for (at, _) in expr.match_indices(keyword) {
            let before = expr[..at].chars().next_back();
            let after = expr[at + keyword.len()..].trim_start();
            if before.is_some_and(is_word_char) || !after.starts_with('(') {
                continue;
            }
            let list = &after[1..after.find(')').expect("a closed label list")];
            found.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    found
}

/// The names inside `{{ ... }}` templates that are labels: `{{method}}`
/// (a Grafana legend) or `{{ $labels.kind }}` (an alert annotation).
fn template_labels(text: &str) -> Vec<String> {
    text.split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}"))
        .filter_map(|(inside, _)| {
            let inside = inside.trim();
            let name = inside.strip_prefix("$labels.").unwrap_or(inside);
            name.chars().all(is_word_char).then(|| name.to_owned())
        })
        .collect()
}

impl Findings {
    /// Every metric and label `expr` uses is one the code records.
    fn promql(&mut self, expr: &str, origin: &str) {
        let recorded = &*RECORDED;
        let metrics = promql_metrics(expr);
        if metrics.is_empty() {
            self.0
                .push(format!("{origin}: reads no revocd_* metric: {expr}"));
        }
        for metric in metrics {
            let histogram_series = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| metric.strip_suffix(suffix))
                .any(|base| recorded.histograms.contains(base));
            if !recorded.names.contains(metric) && !histogram_series {
                self.0
                    .push(format!("{origin}: src/ records no metric {metric}"));
            }
        }
        for label in promql_labels(expr) {
            if !recorded.knows_label(&label) {
                self.0
                    .push(format!("{origin}: no metric has a label {label}"));
            }
        }
    }

    /// Every label a template names is one the code records.
    fn templates(&mut self, text: &str, origin: &str) {
        for label in template_labels(text) {
            if !RECORDED.knows_label(&label) {
                self.0
                    .push(format!("{origin}: template names no label: {label}"));
            }
        }
    }
}

fn dashboard() -> Json {
    serde_json::from_str(&read("grafana/revocd.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/revocd.json: {e}"))
}

/// The dashboard's panels, those inside rows included; rows themselves
/// are left out.
fn dashboard_panels(dashboard: &Json) -> Vec<&Json> {
    let mut panels = Vec::new();
    let mut pending: Vec<&Json> = dashboard["panels"]
        .as_array()
        .expect("deploy/grafana/revocd.json: panels")
        .iter()
        .collect();
    while let Some(panel) = pending.pop() {
        if panel["type"] == "row" {
            pending.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            panels.push(panel);
        }
    }
    panels
}

/// Every `revocd_*` metric the expressions of `exprs` read.
fn metrics_read<'a>(exprs: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    exprs
        .into_iter()
        .flat_map(promql_metrics)
        .map(str::to_owned)
        .collect()
}

#[test]
fn grafana_dashboard_queries_metrics_the_code_records() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    assert!(
        variables
            .iter()
            .any(|variable| variable["name"] == "datasource"
                && variable["type"] == "datasource"
                && variable["query"] == "prometheus"),
        "a Prometheus `datasource` variable: {variables:?}"
    );

    let mut findings = Findings::default();
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    let panels = dashboard_panels(&dashboard);
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let origin = format!("deploy/grafana/revocd.json, panel {title:?}");
        if title.is_empty() {
            findings.0.push(format!("{origin}: no title"));
        }
        if !ids.insert(panel["id"].to_string()) {
            findings
                .0
                .push(format!("{origin}: id {} used twice", panel["id"]));
        }
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        if !x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24) {
            findings
                .0
                .push(format!("{origin}: outside the 24-column grid"));
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if targets.is_empty() {
            findings.0.push(format!("{origin}: no query"));
        }
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.is_empty() {
                findings.0.push(format!("{origin}: a target without expr"));
            }
            findings.promql(expr, &origin);
            findings.templates(target["legendFormat"].as_str().unwrap_or(""), &origin);
            exprs.push(expr);
        }
        for datasource in [&panel["datasource"]]
            .into_iter()
            .chain(targets.iter().map(|t| &t["datasource"]))
        {
            if datasource["uid"] != "${datasource}" {
                findings.0.push(format!(
                    "{origin}: datasource {datasource}, not the ${{datasource}} variable"
                ));
            }
        }
    }
    findings.assert_none("deploy/grafana/revocd.json");

    // What the dashboard is for: each of these is on it.
    let read = metrics_read(exprs.iter().copied());
    for metric in [
        "revocd_revocations_total",
        "revocd_rpc_requests_total",
        "revocd_rpc_duration_seconds_bucket",
        "revocd_propagation_delay_seconds_bucket",
        "revocd_change_log_lag_seconds_bucket",
        "revocd_agent_filter_staleness_seconds",
        "revocd_filter_slices",
        "revocd_filter_estimated_fp_rate",
        "revocd_filter_fp_rate_target",
        "revocd_revocations_live",
        "revocd_claim_cutoffs_live",
        "revocd_outdated_gateways_total",
        "revocd_subscribers_connected",
        "revocd_filter_snapshots_sent_total",
        "revocd_filter_deltas_sent_total",
        "revocd_subscriber_rebases_total",
        "revocd_store_errors_total",
        "revocd_change_log_errors_total",
    ] {
        assert!(read.contains(metric), "no panel shows {metric}");
    }

    // The queries as recording rules, for promtool's PromQL parser
    // (Grafana's `$__rate_interval` becomes a plain range).
    let dir = tempfile::tempdir().expect("temp dir");
    let rules: Vec<Json> = exprs
        .iter()
        .enumerate()
        .map(|(index, expr)| {
            serde_json::json!({
                "record": format!("dashboard:query_{index}"),
                "expr": expr.replace("$__rate_interval", "5m"),
            })
        })
        .collect();
    let file = dir.path().join("dashboard-queries.yml");
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, groups.to_string()).expect("writing the queries");
    promtool_check_rules(&file);
}

fn alert_rules() -> Vec<Json> {
    let rules = yaml("prometheus/alerts.yml");
    let groups = rules["groups"]
        .as_array()
        .expect("deploy/prometheus/alerts.yml: groups");
    assert!(!groups.is_empty(), "no rule groups");
    groups
        .iter()
        .flat_map(|group| {
            assert!(group["name"].is_string(), "a group without a name");
            group["rules"]
                .as_array()
                .unwrap_or_else(|| panic!("group {}: no rules", group["name"]))
                .iter()
                .cloned()
        })
        .collect()
}

/// A Prometheus duration: digits and a unit (`30s`, `5m`, `1h`).
fn is_duration(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| "smhdwy".contains(c));
    digits.len() + 1 == text.len()
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn prometheus_alerts_are_complete_and_use_metrics_the_code_records() {
    let mut findings = Findings::default();
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    let rules = alert_rules();
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or_default();
        let origin = format!("deploy/prometheus/alerts.yml, alert {name:?}");
        if name.is_empty() || !names.insert(name.to_owned()) {
            findings.0.push(format!("{origin}: unnamed or named twice"));
        }
        let expr = rule["expr"].as_str().unwrap_or_default();
        findings.promql(expr, &origin);
        exprs.push(expr.to_owned());
        if !rule["for"].as_str().is_some_and(is_duration) {
            findings.0.push(format!("{origin}: for: {}", rule["for"]));
        }
        let severity = rule["labels"]["severity"].as_str();
        if !matches!(severity, Some("warning" | "critical")) {
            findings.0.push(format!("{origin}: severity {severity:?}"));
        }
        for field in ["summary", "description"] {
            let text = rule["annotations"][field].as_str().unwrap_or_default();
            if text.trim().is_empty() {
                findings.0.push(format!("{origin}: no annotations.{field}"));
            }
            findings.templates(text, &origin);
        }
    }
    findings.assert_none("deploy/prometheus/alerts.yml");

    // The alerts the issue asks for: stale gateways, a filter near its
    // bound, Redis errors.
    let read = metrics_read(exprs.iter().map(String::as_str));
    for metric in [
        "revocd_agent_filter_staleness_seconds",
        "revocd_agent_ready",
        "revocd_filter_estimated_fp_rate",
        "revocd_store_errors_total",
        "revocd_change_log_errors_total",
        "revocd_propagation_delay_seconds_bucket",
        "revocd_outdated_gateways_total",
        "revocd_claim_cutoffs_total",
    ] {
        assert!(read.contains(metric), "no alert reads {metric}");
    }

    promtool_check_rules(&deploy_dir().join("prometheus/alerts.yml"));
}

/// `promtool check rules <path>` must pass, where promtool is installed:
/// it has the last word on PromQL, but the checks above do not need it.
fn promtool_check_rules(path: &Path) {
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool check rules {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => eprintln!("promtool is not installed; checked without it"),
    }
}

#[test]
fn the_metric_check_catches_a_misspelt_metric_or_label() {
    let mut findings = Findings::default();
    findings.promql(
        "histogram_quantile(0.99, sum by (method, le) (rate(revocd_rpc_duration_seconds_bucket{method=\"Revoke\"}[5m])))",
        "ok",
    );
    findings.promql(
        "revocd_filter_estimated_fp_rate > on (instance) revocd_filter_fp_rate_target",
        "ok",
    );
    findings.templates(
        "{{ $labels.kind }} {{method}} {{ $value | humanize }}",
        "ok",
    );
    assert!(findings.0.is_empty(), "{:?}", findings.0);

    findings.promql("rate(revocd_revocation_total[5m])", "bad");
    findings.promql("rate(revocd_revocations_total_bucket[5m])", "bad");
    findings.promql(
        "sum by (status) (rate(revocd_rpc_requests_total[5m]))",
        "bad",
    );
    findings.promql("revocd_store_errors_total{knd=\"unavailable\"}", "bad");
    findings.promql("up == 0", "bad");
    findings.templates("{{ $labels.replica }}", "bad");
    assert_eq!(findings.0.len(), 6, "{:?}", findings.0);
}
