//! Keys and tokens for the access-control tests: one key pair per algorithm (made
//! once per process), and tokens signed with them by the same code as
//! `crm-events-sidecar token`.

use crm_events_sidecar::token::{self, KeyPair};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The shared secret of the HS256 tests.
pub const HS256_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

/// The key pair of `alg` (EdDSA, ES256 or RS256), generated once per process.
pub fn keys(alg: Algorithm) -> &'static KeyPair {
    static ED: OnceLock<KeyPair> = OnceLock::new();
    static EC: OnceLock<KeyPair> = OnceLock::new();
    static RS: OnceLock<KeyPair> = OnceLock::new();
    let cell = match alg {
        Algorithm::EdDSA => &ED,
        Algorithm::ES256 => &EC,
        Algorithm::RS256 => &RS,
        other => panic!("no test keys for {other:?}"),
    };
    cell.get_or_init(|| token::generate(alg).expect("key generation"))
}

/// Claims for `subject` with `tenants`, valid for `ttl` seconds from now.
pub fn claims(subject: &str, tenants: &[&str], ttl: i64) -> Value {
    let now = token::now() as i64;
    json!({ "sub": subject, "tenants": tenants, "iat": now, "exp": now + ttl })
}

/// `claims` signed with the test key of `alg` (the HS256 secret for HS256).
pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => HS256_SECRET.as_bytes(),
        other => keys(other).private_pem.as_bytes(),
    };
    token::sign(alg, key, kid, claims).expect("signing")
}

/// An EdDSA token for `subject` and `tenants`, valid for an hour.
pub fn token(subject: &str, tenants: &[&str]) -> String {
    sign(Algorithm::EdDSA, None, &claims(subject, tenants, 3600))
}

/// The app variables that make it accept the test keys of these algorithms.
pub fn auth_vars(algs: &[Algorithm]) -> Vec<(&'static str, String)> {
    let pems: String = algs
        .iter()
        .filter(|a| **a != Algorithm::HS256)
        .map(|a| keys(*a).public_pem.clone())
        .collect();
    let names: Vec<String> = algs.iter().map(|a| format!("{a:?}")).collect();
    let mut vars = vec![
        ("auth_mode", "jwt".to_string()),
        ("auth_public_keys", pems),
        ("auth_algorithms", names.join(",")),
    ];
    if algs.contains(&Algorithm::HS256) {
        vars.push(("auth_hs256_secret", HS256_SECRET.to_string()));
    }
    vars
}

/// `claims` under a header of the caller's making (e.g. with `crit`), signed with
/// the EdDSA test key: for headers `crm-events-sidecar token` never writes.
pub fn sign_with_header(header: &Value, claims: &Value) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(header), b64(claims));
    let key = jsonwebtoken::EncodingKey::from_ed_pem(keys(Algorithm::EdDSA).private_pem.as_bytes())
        .expect("the test key");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::EdDSA).expect("signing");
    format!("{message}.{signature}")
}

/// An EdDSA token of arbitrary claims (`sub`, `tenants` and times as given).
pub fn sign_claims(claims: &Value) -> String {
    sign(Algorithm::EdDSA, None, claims)
}

/// Seconds since the epoch, as the tokens count them.
pub fn now() -> u64 {
    token::now()
}
