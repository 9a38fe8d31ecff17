//! Reading `spin.toml`: the parts of Spin's manifest (version 2) the host needs.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The manifest as written.
#[derive(Debug, Deserialize)]
struct Raw {
    spin_manifest_version: u32,
    #[serde(default)]
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Debug, Deserialize, Default)]
struct RawApplication {
    #[serde(default)]
    name: String,
    version: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Debug, Deserialize)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

/// A declared variable. `secret = true` is accepted and needs nothing more: the
/// host never prints a variable's value.
#[derive(Debug, Deserialize)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    build: Option<RawBuild>,
}

#[derive(Debug, Deserialize)]
struct RawBuild {
    command: String,
}

/// One component, with its variables and allowed hosts resolved.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// Its id in the manifest.
    pub id: String,
    /// The `.wasm` file.
    pub source: PathBuf,
    /// Component variable name -> resolved value.
    pub variables: HashMap<String, String>,
    /// `allowed_outbound_hosts`, templates resolved.
    pub allowed_outbound_hosts: Vec<String>,
    /// `[component.<id>.build] command`, what `spin build` runs.
    pub build_command: Option<String>,
}

/// A route pattern: exact (`/healthz`) or wildcard (`/...`, `/ops/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Matches this path only.
    Exact(String),
    /// Matches this prefix and everything below it.
    Wildcard(String),
}

impl Route {
    /// The route as `spin.toml` spells it.
    pub fn pattern(&self) -> String {
        match self {
            Route::Exact(p) => p.clone(),
            Route::Wildcard(prefix) => format!("{prefix}/..."),
        }
    }

    fn parse(route: &str) -> Self {
        match route.strip_suffix("/...") {
            Some(prefix) => Route::Wildcard(prefix.to_string()),
            None => Route::Exact(route.to_string()),
        }
    }

    /// How well `path` matches: exact routes beat wildcards, longer prefixes beat
    /// shorter ones (Spin's rules). `None` when it does not match.
    fn score(&self, path: &str) -> Option<usize> {
        match self {
            Route::Exact(p) => (p == path).then_some(usize::MAX),
            Route::Wildcard(prefix) => {
                let below = path.strip_prefix(prefix.as_str())?;
                (below.is_empty() || below.starts_with('/')).then_some(prefix.len())
            }
        }
    }
}

/// The application.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `[application] name`.
    pub name: String,
    /// `[application] version`.
    pub version: Option<String>,
    /// Components by id.
    pub components: BTreeMap<String, ComponentSpec>,
    /// Routes in manifest order, with the component each one serves.
    pub routes: Vec<(Route, String)>,
}

impl Manifest {
    /// Reads `path`; application variables come from `overrides`, then
    /// `SPIN_VARIABLE_<NAME>` in the environment, then the manifest defaults.
    pub fn load(path: &Path, overrides: &HashMap<String, String>) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let raw: Raw =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if raw.spin_manifest_version != 2 {
            bail!(
                "{}: only spin_manifest_version = 2 is supported",
                path.display()
            );
        }
        let app_vars = resolve_variables(&raw.variables, overrides)
            .with_context(|| format!("variables of {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let components = raw
            .component
            .into_iter()
            .map(|(id, c)| {
                let spec = component_spec(&id, c, base, &app_vars)
                    .with_context(|| format!("component {id}"))?;
                Ok((id, spec))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let mut routes = Vec::new();
        for t in raw.trigger.http {
            if !components.contains_key(&t.component) {
                bail!("route {} names unknown component {}", t.route, t.component);
            }
            routes.push((Route::parse(&t.route), t.component));
        }
        Ok(Self {
            name: raw.application.name,
            version: raw.application.version,
            components,
            routes,
        })
    }

    /// The component that serves `path`, by Spin's matching rules.
    pub fn route(&self, path: &str) -> Option<&str> {
        self.route_match(path).map(|(_, c)| c)
    }

    /// The route that matches `path` and the component it names.
    pub fn route_match(&self, path: &str) -> Option<(&Route, &str)> {
        self.routes
            .iter()
            .filter_map(|(r, c)| Some((r.score(path)?, r, c)))
            .max_by_key(|(score, _, _)| *score)
            .map(|(_, r, c)| (r, c.as_str()))
    }
}

/// Application variables, as Spin resolves them: an explicit override, then
/// `SPIN_VARIABLE_<NAME>`, then the default; a required one without a value and an
/// override of an undeclared one are errors.
fn resolve_variables(
    declared: &BTreeMap<String, RawVariable>,
    overrides: &HashMap<String, String>,
) -> Result<HashMap<String, String>> {
    if let Some(name) = overrides.keys().find(|n| !declared.contains_key(*n)) {
        bail!("variable {name} is not declared in [variables]");
    }
    let mut values = HashMap::new();
    for (name, var) in declared {
        if !valid_variable_name(name) {
            bail!("variable name {name:?} is invalid: lowercase letters, digits and _, starting with a letter");
        }
        if var.required && var.default.is_some() {
            bail!("variable {name} is required and has a default: it can only be one");
        }
        let env = std::env::var(format!("SPIN_VARIABLE_{}", name.to_uppercase())).ok();
        let value = overrides
            .get(name)
            .cloned()
            .or(env)
            .or_else(|| var.default.clone());
        match value {
            Some(v) => {
                values.insert(name.clone(), v);
            }
            None if var.required => bail!("variable {name} is required but has no value"),
            None => {}
        }
    }
    Ok(values)
}

/// Spin's rule for variable names: lowercase ASCII letters, digits and `_`, starting
/// with a letter.
pub fn valid_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// One component with its templates expanded.
fn component_spec(
    id: &str,
    c: RawComponent,
    base: &Path,
    app_vars: &HashMap<String, String>,
) -> Result<ComponentSpec> {
    let variables = c
        .variables
        .iter()
        .map(|(k, v)| Ok((k.clone(), expand(v, app_vars)?)))
        .collect::<Result<_>>()?;
    let allowed_outbound_hosts = c
        .allowed_outbound_hosts
        .iter()
        .map(|h| expand(h, app_vars))
        .collect::<Result<_>>()?;
    Ok(ComponentSpec {
        id: id.to_string(),
        source: base.join(&c.source),
        variables,
        allowed_outbound_hosts,
        build_command: c.build.map(|b| b.command),
    })
}

/// Expands `{{ name }}` references to application variables.
pub fn expand(template: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .with_context(|| format!("unclosed {{{{ in {template:?}"))?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .with_context(|| format!("{template:?} uses undefined variable {name}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_prefer_exact_then_longest_prefix() {
        let m = Manifest {
            name: "t".into(),
            version: None,
            components: BTreeMap::new(),
            routes: vec![
                (Route::parse("/..."), "fallback".into()),
                (Route::parse("/healthz"), "health".into()),
                (Route::parse("/ops/..."), "ops".into()),
            ],
        };
        assert_eq!(m.route("/healthz"), Some("health"));
        assert_eq!(m.route("/"), Some("fallback"));
        assert_eq!(m.route("/nope"), Some("fallback"));
        assert_eq!(m.route("/ops/x"), Some("ops"));
        assert_eq!(m.route("/ops"), Some("ops"));
        assert_eq!(m.route("/opsx"), Some("fallback"));
        assert_eq!(m.routes[0].0.pattern(), "/...");
        assert_eq!(m.routes[2].0.pattern(), "/ops/...");
    }

    #[test]
    fn templates_expand() {
        let vars = HashMap::from([("host".to_string(), "h:1".to_string())]);
        assert_eq!(
            expand("redis://{{ host }}/0", &vars).unwrap(),
            "redis://h:1/0"
        );
        assert!(expand("{{ nope }}", &vars).is_err());
        assert!(expand("{{ host", &vars).is_err());
    }

    fn declared(vars: &[(&str, Option<&str>, bool)]) -> BTreeMap<String, RawVariable> {
        vars.iter()
            .map(|(n, d, r)| {
                let var = RawVariable {
                    default: d.map(str::to_string),
                    required: *r,
                };
                (n.to_string(), var)
            })
            .collect()
    }

    /// Spin's order: `--variable` beats `SPIN_VARIABLE_<NAME>` beats the default.
    #[test]
    fn variables_resolve_in_spins_order() {
        let vars = declared(&[
            ("host_parity_a", Some("default-a"), false),
            ("host_parity_b", Some("default-b"), false),
            ("host_parity_c", Some("default-c"), false),
        ]);
        std::env::set_var("SPIN_VARIABLE_HOST_PARITY_A", "env-a");
        std::env::set_var("SPIN_VARIABLE_HOST_PARITY_B", "env-b");
        let overrides = HashMap::from([("host_parity_a".to_string(), "flag-a".to_string())]);
        let got = resolve_variables(&vars, &overrides).unwrap();
        assert_eq!(got["host_parity_a"], "flag-a");
        assert_eq!(got["host_parity_b"], "env-b");
        assert_eq!(got["host_parity_c"], "default-c");
    }

    /// As `spin up`: a required variable without a value, one that is both required
    /// and defaulted, a bad name and an override of an undeclared one stop the load.
    #[test]
    fn variable_mistakes_stop_the_load_like_spin() {
        let none = HashMap::new();
        let err = resolve_variables(&declared(&[("needed_xyz", None, true)]), &none);
        assert!(format!("{:#}", err.unwrap_err()).contains("needed_xyz is required"));
        let both = resolve_variables(&declared(&[("both", Some("x"), true)]), &none);
        assert!(format!("{:#}", both.unwrap_err()).contains("only be one"));
        let bad = resolve_variables(&declared(&[("Bad-Name", Some("x"), false)]), &none);
        assert!(format!("{:#}", bad.unwrap_err()).contains("invalid"));
        let stray = HashMap::from([("nope".to_string(), "x".to_string())]);
        let err = resolve_variables(&declared(&[]), &stray).unwrap_err();
        assert!(err.to_string().contains("not declared"));
        assert!(!valid_variable_name("1abc") && valid_variable_name("a_1"));
    }
}
