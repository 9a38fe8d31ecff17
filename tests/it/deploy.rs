//! The deployment files are valid and agree with the service: promtool accepts the
//! Prometheus config and rules, every metric the rules and the dashboard query is
//! one crm-events exports, and the compose and Kubernetes files parse and carry
//! what they must (services, health checks, probes).

mod common;

use crm_events_contracts::metrics::{self, Kind};
use crm_events_harness::tools;
use std::collections::BTreeSet;
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> std::path::PathBuf {
    common::root().join("deploy").join(path)
}

fn yaml(path: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool(args: &[&str]) {
    tools::promtool(args, "");
}

fn is_histogram(name: &str) -> bool {
    metrics::ALL
        .iter()
        .any(|f| f.name == name && f.kind == Kind::Histogram)
}

/// `crm_events_…` metric names used in a text, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("crm_events_") {
        let start = i + at;
        let preceded = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if !preceded {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| is_histogram(b)))
                .unwrap_or(name);
            found.insert(base.to_string());
        }
        i = end;
    }
    found
}

#[test]
fn promtool_accepts_the_config_and_rules() {
    promtool(&[
        "check",
        "config",
        deploy("prometheus/prometheus.yml").to_str().unwrap(),
    ]);
    promtool(&[
        "check",
        "rules",
        deploy("prometheus/alerts.yml").to_str().unwrap(),
    ]);
}

/// The alerts fire and stay quiet as they should on synthetic series
/// (`deploy/prometheus/alerts.test.yml`: burn rates at 30%, 5% and 1% late events,
/// a recovered short window, streams near `max_clients`).
#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&[
        "test",
        "rules",
        deploy("prometheus/alerts.test.yml").to_str().unwrap(),
    ]);
}

/// The SLO rules as written: each recorded error ratio over the window its name
/// says, the burn rates against a 1% budget (99% target), and each burn-rate alert
/// pairing a long and a short window at its factor.
#[test]
fn slo_rules_use_the_documented_windows_factors_and_target() {
    let docs = yaml("prometheus/alerts.yml");
    let rules: Vec<&Yaml> = docs[0]["groups"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_vec().unwrap())
        .collect();
    let expr = |key: &str, name: &str| -> String {
        let rule = rules
            .iter()
            .find(|r| r[key].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no rule {key}: {name}"));
        rule["expr"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    for window in ["5m", "30m", "1h", "6h"] {
        let e = expr(
            "record",
            &format!("crm_events:event_age_slo_errors:ratio_rate{window}"),
        );
        assert_eq!(
            e,
            format!(
                "1 - (sum(rate(crm_events_sidecar_event_age_seconds_bucket{{le=\"1\"}}[{window}])) / sum(rate(crm_events_sidecar_event_age_seconds_count[{window}])))"
            )
        );
    }
    for (alert, long, short, factor) in [
        ("CrmEventsEventAgeBudgetFastBurn", "1h", "5m", "14.4"),
        ("CrmEventsEventAgeBudgetSlowBurn", "6h", "30m", "2.4"),
    ] {
        assert_eq!(
            expr("alert", alert),
            format!(
                "crm_events:event_age_slo_errors:ratio_rate{long} > ({factor} * 0.01) and crm_events:event_age_slo_errors:ratio_rate{short} > ({factor} * 0.01)"
            )
        );
    }
}

#[test]
fn rules_and_dashboard_query_only_exported_metrics() {
    let exported: BTreeSet<String> = metrics::ALL.iter().map(|f| f.name.to_string()).collect();
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(deploy("grafana/dashboards/crm-events.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    for (what, text) in [("alerts.yml", &rules), ("dashboard", &dashboard)] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{what} queries no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} queries metrics crm-events does not export: {unknown:?}"
        );
    }
    // The headline metrics are on the dashboard and in the rules.
    for name in [
        metrics::SSE_CLIENTS.name,
        metrics::CONSUMER_LAG.name,
        metrics::EVENT_AGE_SECONDS.name,
        metrics::ERRORS_TOTAL.name,
        metrics::OUTBOX_PENDING_ROWS.name,
        metrics::OUTBOX_FAILED_ROWS.name,
        metrics::OUTBOX_OLDEST_PENDING_AGE_SECONDS.name,
    ] {
        assert!(dashboard.contains(name), "dashboard lacks {name}");
    }
    for alert in [
        "CrmEventsSidecarDown",
        "CrmEventsConsumerLagHigh",
        "CrmEventsNoEventsWhileProducing",
        "CrmEventsSseClientsNearLimit",
        "CrmEventsSidecarErrors",
        "CrmEventsEventAgeBudgetFastBurn",
        "CrmEventsEventAgeBudgetSlowBurn",
        "CrmEventsOutboxNoLeader",
        "CrmEventsOutboxBacklogOld",
        "CrmEventsOutboxBacklogLarge",
        "CrmEventsOutboxFailedRows",
        "CrmEventsOutboxErrors",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "missing alert {alert}"
        );
    }
}

#[test]
fn compose_has_every_service_with_health_checks() {
    let docs = yaml("compose.yaml");
    let services = &docs[0]["services"];
    for name in [
        "kafka",
        "kafka-init",
        "redis",
        "postgres",
        "publisher",
        "sidecar",
        "app",
        "prometheus",
        "grafana",
    ] {
        assert!(
            !services[name].is_badvalue(),
            "compose lacks service {name}"
        );
    }
    for name in [
        "kafka",
        "redis",
        "postgres",
        "publisher",
        "sidecar",
        "app",
        "prometheus",
    ] {
        assert!(
            !services[name]["healthcheck"]["test"].is_badvalue(),
            "{name} has no health check"
        );
    }
    let topic: Vec<&str> = services["kafka-init"]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(topic.windows(2).any(|w| w == ["--partitions", "3"]));
    assert_eq!(
        services["sidecar"]["environment"]["KAFKA_BROKERS"].as_str(),
        Some("kafka:9092")
    );
    let publisher = &services["publisher"];
    assert_eq!(
        publisher["deploy"]["replicas"].as_i64(),
        Some(2),
        "a leader and a standby"
    );
    assert_eq!(
        publisher["environment"]["KAFKA_BROKERS"].as_str(),
        Some("kafka:9092")
    );
    assert!(publisher["environment"]["DATABASE_URL"]
        .as_str()
        .unwrap()
        .contains("@postgres:5432/crm"));
}

/// The app image builds every component `spin.toml` names (it once left one out).
#[test]
fn the_app_image_builds_every_component() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile.app")).unwrap();
    let manifest = crm_events_host::manifest::Manifest::load(
        &common::root().join("spin.toml"),
        &Default::default(),
    )
    .unwrap();
    for c in manifest.components.values() {
        let package = c
            .build_command
            .as_deref()
            .and_then(|b| b.split("-p ").nth(1))
            .expect("a build command naming its package");
        assert!(
            dockerfile.contains(&format!("-p {package}")),
            "Dockerfile.app does not build {package}"
        );
    }
}

/// `docker compose config` validates the compose file further where the Compose
/// plugin exists; elsewhere the check is reported skipped by name.
#[test]
fn docker_compose_accepts_the_compose_file() {
    if !tools::docker_compose_available() {
        tools::report_skipped(
            "deploy::docker_compose_accepts_the_compose_file",
            "the docker compose plugin is not installed (no Docker engine on this machine)",
        );
        return;
    }
    let out = Command::new("docker")
        .args([
            "compose",
            "-f",
            deploy("compose.yaml").to_str().unwrap(),
            "config",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kubernetes_manifests_parse_and_probe_the_sidecar() {
    let mut kinds = BTreeSet::new();
    for file in [
        "k8s/config.yaml",
        "k8s/spinapp.yaml",
        "k8s/sidecar.yaml",
        "k8s/publisher.yaml",
        "k8s/redis.yaml",
        "k8s/postgres.yaml",
    ] {
        for doc in yaml(file) {
            assert!(
                doc["apiVersion"].as_str().is_some(),
                "{file}: a document without apiVersion"
            );
            let kind = doc["kind"].as_str().unwrap().to_string();
            if kind == "Deployment" {
                let c = &doc["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(
                    c["livenessProbe"]["httpGet"]["path"].as_str(),
                    Some("/healthz")
                );
                assert_eq!(
                    c["readinessProbe"]["httpGet"]["path"].as_str(),
                    Some("/readyz")
                );
            }
            if kind == "SpinApp" {
                let vars: Vec<&str> = doc["spec"]["variables"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .filter_map(|v| v["name"].as_str())
                    .collect();
                assert!(vars.contains(&"redis_host") && vars.contains(&"key_prefix"));
                assert!(vars.contains(&"postgres_host") && vars.contains(&"postgres_password"));
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "ConfigMap",
        "Secret",
        "SpinApp",
        "Deployment",
        "StatefulSet",
        "Service",
    ] {
        assert!(kinds.contains(kind), "no {kind} among the manifests");
    }
}

/// The Kubernetes ConfigMap carries the service's own defaults (one definition in
/// the shared crate; `spin.toml` is tied to it by the routes test).
#[test]
fn kubernetes_config_uses_the_service_defaults() {
    use crm_events_contracts::config as c;
    let docs = yaml("k8s/config.yaml");
    let data = &docs[0]["data"];
    let value = |key: &str| {
        data[key]
            .as_str()
            .unwrap_or_else(|| panic!("config.yaml lacks {key}"))
            .to_string()
    };
    assert_eq!(value("max_clients"), c::DEFAULT_MAX_CLIENTS.to_string());
    assert_eq!(value("kafka_topic"), c::DEFAULT_KAFKA_TOPIC);
    assert_eq!(value("kafka_group"), c::DEFAULT_KAFKA_GROUP);
    assert_eq!(value("kafka_brokers"), c::DEFAULT_KAFKA_BROKERS);
    assert_eq!(
        value("key_prefix"),
        crm_events_contracts::keys::DEFAULT_PREFIX
    );
}

#[test]
fn grafana_provisioning_parses() {
    let ds = yaml("grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(ds[0]["datasources"][0]["type"].as_str(), Some("prometheus"));
    let dash = yaml("grafana/provisioning/dashboards/crm-events.yaml");
    assert_eq!(
        dash[0]["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
}
