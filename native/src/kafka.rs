//! Where Kafka is, and librdkafka properties passed through.
//!
//! Every process that talks to Kafka takes the same flags and variables: brokers,
//! topic, and any librdkafka property, with `--kafka-config key=value` (repeatable)
//! or an environment variable `KAFKA_PROP_<NAME>` where `_` stands for `.`
//! (`KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`), so SASL and
//! TLS clusters work. The flag wins over the variable.

use clap::Args;
use crm_events_contracts::config::{DEFAULT_KAFKA_BROKERS, DEFAULT_KAFKA_TOPIC};

/// Environment prefix of librdkafka pass-through properties.
pub const KAFKA_PROP_PREFIX: &str = "KAFKA_PROP_";

/// Brokers, topic and librdkafka properties.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port, comma-separated).
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", default_value = DEFAULT_KAFKA_BROKERS, value_parser = parse_brokers)]
    pub brokers: String,
    /// Topic.
    #[arg(long = "kafka-topic", env = "KAFKA_TOPIC", default_value = DEFAULT_KAFKA_TOPIC)]
    pub topic: String,
    /// Extra librdkafka property, key=value (repeatable); see also KAFKA_PROP_*.
    #[arg(long = "kafka-config", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

impl KafkaArgs {
    /// `base` (this process's own settings), then `KAFKA_PROP_*`, then
    /// `--kafka-config`: later entries win.
    pub fn properties_over(&self, base: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut props = base;
        props.push(("bootstrap.servers".to_string(), self.brokers.clone()));
        props.extend(env_properties(std::env::vars()));
        props.extend(self.properties.iter().cloned());
        props
    }
}

/// `KAFKA_PROP_SASL_MECHANISM=PLAIN` -> `("sasl.mechanism", "PLAIN")`.
pub fn env_properties(
    vars: impl Iterator<Item = (String, String)>,
) -> impl Iterator<Item = (String, String)> {
    vars.filter_map(|(k, v)| {
        let name = k.strip_prefix(KAFKA_PROP_PREFIX)?;
        (!name.is_empty()).then(|| (name.to_lowercase().replace('_', "."), v))
    })
}

/// Parses a `key=value` librdkafka property (`--kafka-config`).
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Brokers must name at least one `host:port` (an empty list would make librdkafka
/// wait for its timeout instead of failing at once).
pub fn parse_brokers(s: &str) -> Result<String, String> {
    let brokers: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if brokers.is_empty() {
        return Err("no broker given: expected host:port[,host:port…]".to_string());
    }
    if let Some(bad) = brokers.iter().find(|b| !b.contains(':')) {
        return Err(format!("{bad:?} is not host:port"));
    }
    Ok(brokers.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_properties_map_underscores_to_dots() {
        let vars = vec![
            (
                "KAFKA_PROP_SECURITY_PROTOCOL".to_string(),
                "SASL_SSL".to_string(),
            ),
            ("KAFKA_BROKERS".to_string(), "x".to_string()),
            ("KAFKA_PROP_".to_string(), "ignored".to_string()),
        ];
        let props: Vec<_> = env_properties(vars.into_iter()).collect();
        assert_eq!(
            props,
            vec![("security.protocol".to_string(), "SASL_SSL".to_string())]
        );
    }

    #[test]
    fn property_flag_needs_key_and_value() {
        assert_eq!(
            parse_property("sasl.password=a=b").unwrap(),
            ("sasl.password".to_string(), "a=b".to_string())
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=x").is_err());
    }

    #[test]
    fn brokers_must_be_named() {
        assert_eq!(parse_brokers(" a:1 , b:2 ").unwrap(), "a:1,b:2");
        assert!(parse_brokers("").is_err());
        assert!(parse_brokers(" , ").is_err());
        assert!(parse_brokers("kafka").is_err());
    }
}
