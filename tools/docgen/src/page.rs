//! The configuration page: one table per process, each row from a setting's
//! definition.

use anyhow::{bail, Result};
use clap::{Arg, Args, CommandFactory};

/// Where the page lives, from the workspace root.
pub const PAGE: &str = "docs/src/configuration.md";

/// What the page says before the tables.
const INTRO: &str = "# Configuration

<!-- Written by `cargo run -p crm-events-docgen` from spin.toml's [variables] and the
     native processes' command-line definitions; a test fails when it is out of date.
     Edit those, not this page. -->

Every setting, where it is defined. The app (the Spin components) reads **Spin
variables**; the native processes read **environment variables or flags**
(`--help` lists them too). Settings that must agree between the two — the key prefix,
the Redis shards, whether the all-tenants stream exists — say so.
";

/// What the page says after the tables.
const NOTES: &str = "## Kafka client properties

Besides the flags above, the sidecar and the publisher take any librdkafka property as
an environment variable `KAFKA_PROP_<NAME>`, where `_` stands for `.`
(`KAFKA_PROP_SECURITY_PROTOCOL=SASL_SSL`, `KAFKA_PROP_SASL_MECHANISM=SCRAM-SHA-512`),
or as `--kafka-config key=value` (repeatable); the flag wins. So SASL and TLS
clusters work without a setting of their own.

## Logging

The native processes log to standard error, as text; `LOG_FORMAT=json` makes each
line a JSON object. `RUST_LOG` sets the level (`info` by default; e.g.
`RUST_LOG=crm_events_sidecar=debug`). Tokens, passwords and secret variables are never
logged.

## Tools

`crm-events-sidecar produce [--key K] [--partition P] ['{\"Type\":\"JobCreated\",…}']`
publishes one event (the argument or standard input). `crm-events-sidecar keygen` and
`crm-events-sidecar token` make key pairs and test tokens ([Access
control](access-control.md)). `crm-events-outbox status`, `failed list`, `failed
requeue`, `retention` and `migrate` are in [Publishing](publishing.md#operations).
";

/// The whole page.
pub fn configuration(manifest: &str) -> Result<String> {
    let mut page = String::from(INTRO);
    page += "\n## The app: Spin variables\n\n";
    page += "`spin.toml` `[variables]`; set with `spin up --variable name=value`, \
             `SPIN_VARIABLE_<NAME>`, or your platform's variables provider. Secret ones \
             are never shown or logged.\n\n";
    page += &spin_table(manifest)?;
    page += "\n## Sidecar: `crm-events-sidecar`\n\n";
    page += &native_table(crm_events_sidecar::config::RunArgs::augment_args(
        clap::Command::new("crm-events-sidecar"),
    ));
    page += "\n## Outbox publisher: `crm-events-outbox`\n\n";
    page += &native_table(crm_events_outbox::config::RunArgs::augment_args(
        clap::Command::new("crm-events-outbox"),
    ));
    page += "\n## Host: `crm-events-host`\n\n";
    page += "The wasmtime host that serves `spin.toml` where the Spin CLI is absent \
             ([Deploying](deploying.md)).\n\n";
    page += &native_table(crm_events_host::cli::HostArgs::command());
    page += "\n";
    page += NOTES;
    Ok(page)
}

/// Variables that share the comment above them.
struct Group {
    /// `(name, default, secret)` of each.
    variables: Vec<(String, String, bool)>,
    /// The comment, joined into one line.
    meaning: String,
}

/// The `[variables]` table of `spin.toml`, one row per commented group.
fn spin_table(manifest: &str) -> Result<String> {
    let groups = spin_groups(manifest)?;
    let mut table = String::from("| variable | default | meaning |\n| --- | --- | --- |\n");
    for group in groups {
        let names: Vec<String> = group
            .variables
            .iter()
            .map(|(n, _, secret)| format!("`{n}`{}", if *secret { " (secret)" } else { "" }))
            .collect();
        let defaults: Vec<String> = group.variables.iter().map(|(_, d, _)| shown(d)).collect();
        table += &format!(
            "| {} | {} | {} |\n",
            names.join(", "),
            defaults.join(", "),
            cell(&group.meaning)
        );
    }
    Ok(table)
}

/// Reads `[variables]` line by line: comments are not in a TOML parser's result.
fn spin_groups(manifest: &str) -> Result<Vec<Group>> {
    let section = manifest
        .split("\n[variables]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .ok_or_else(|| anyhow::anyhow!("spin.toml has no [variables] section"))?;
    let mut groups: Vec<Group> = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in section.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix('#') {
            comment.push(text.trim());
        } else if let Some((name, spec)) = line.split_once(" = ") {
            let variable = (
                name.to_string(),
                default_of(spec)?,
                spec.contains("secret = true"),
            );
            if comment.is_empty() && !groups.is_empty() {
                groups.last_mut().unwrap().variables.push(variable);
            } else if comment.is_empty() {
                bail!("spin.toml variable {name} has no comment above it");
            } else {
                groups.push(Group {
                    variables: vec![variable],
                    meaning: comment.join(" "),
                });
                comment.clear();
            }
        }
    }
    Ok(groups)
}

/// `{ default = "x", … }` → `x`.
fn default_of(spec: &str) -> Result<String> {
    let rest = spec
        .split_once("default = \"")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("a variable without a default: {spec}"))?;
    Ok(rest.split('"').next().unwrap_or_default().to_string())
}

/// One row per setting of a native process.
fn native_table(command: clap::Command) -> String {
    let mut table =
        String::from("| environment | flag | default | meaning |\n| --- | --- | --- | --- |\n");
    for arg in command.get_arguments().filter(|a| documented(a)) {
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let flag = arg
            .get_long()
            .map(|l| format!("`--{l}`"))
            .unwrap_or_default();
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let meaning = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        table += &format!(
            "| {env} | {flag} | {} | {} |\n",
            shown(&default.join(",")),
            cell(&meaning)
        );
    }
    table
}

/// Settings, not clap's own `--help` and `--version`.
fn documented(arg: &Arg) -> bool {
    !matches!(arg.get_id().as_str(), "help" | "version") && arg.get_long().is_some()
}

/// A default as the table shows it.
fn shown(default: &str) -> String {
    if default.is_empty() {
        "*(empty)*".to_string()
    } else {
        format!("`{default}`")
    }
}

/// Text fit for one table cell: one line, no column breaks, and `<…>` shown as text
/// (outside code spans, where Markdown would take it for HTML).
fn cell(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.split('`')
        .enumerate()
        .map(|(i, part)| match i % 2 {
            0 => part.replace('<', "&lt;").replace('>', "&gt;"),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join("`")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_without_a_comment_join_the_group_above() {
        let manifest = "x\n[variables]\n# Where Redis is.\nredis_host = { default = \"h:1\" }\n\
                        redis_port = { default = \"\" }\n# A key.\nkey = { default = \"k\", secret = true }\n[component.a]\n";
        let groups = spin_groups(manifest).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].variables.len(), 2);
        assert_eq!(groups[0].meaning, "Where Redis is.");
        assert!(groups[1].variables[0].2, "secret is read");
        let table = spin_table(manifest).unwrap();
        assert!(
            table.contains("| `redis_host`, `redis_port` | `h:1`, *(empty)* | Where Redis is. |")
        );
        assert!(table.contains("`key` (secret)"));
    }

    #[test]
    fn a_variable_with_no_comment_at_all_is_refused() {
        let manifest = "x\n[variables]\nredis_host = { default = \"h:1\" }\n";
        assert!(spin_groups(manifest).is_err());
    }

    #[test]
    fn the_committed_page_is_what_the_definitions_say() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = std::fs::read_to_string(root.join("spin.toml")).unwrap();
        let committed = std::fs::read_to_string(root.join(PAGE)).unwrap_or_default();
        assert!(
            committed == configuration(&manifest).unwrap(),
            "{PAGE} is out of date: run `cargo run -p crm-events-docgen` and commit it"
        );
    }
}
