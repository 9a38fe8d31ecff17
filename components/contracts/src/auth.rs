//! Access control: who a subscriber is, and which events it may see.
//!
//! A subscriber presents a JWT ([`find_token`]: `Authorization: Bearer`, the session
//! cookie the `session` component sets, or — only when enabled — `?access_token=`).
//! [`Verifier::verify`] checks it against the configured keys: the algorithm must be
//! in the allowlist and match the key's family (an RSA public key is never an HMAC
//! secret; `HS256` has only the shared secret as key), `exp` is required, `nbf` and
//! `iat` are honoured with a small leeway, `iss` and `aud` are checked when
//! configured, and `kid` selects among several keys so they can rotate. The claims
//! become an [`Identity`] whose [`Scope`] (tenants, or `*`; optional event types) is
//! applied to every frame; query filters may narrow it, never widen it
//! ([`Scope::narrow`]).
//!
//! Nothing here performs I/O, and no error message repeats the token.

use crate::config::{flag, number, text, ConfigError, Variables};
use crate::request::Filters;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::BTreeSet;
use std::str::FromStr;

/// `auth_mode`: `jwt` (the default) or `none`.
pub const AUTH_MODE: &str = "auth_mode";
/// `auth_algorithms`: the accepted `alg` values, comma-separated.
pub const AUTH_ALGORITHMS: &str = "auth_algorithms";
/// `auth_public_keys` (secret): PEM public keys (Ed25519, P-256, RSA), concatenated.
pub const AUTH_PUBLIC_KEYS: &str = "auth_public_keys";
/// `auth_jwks` (secret): a JWK set (`{"keys":[…]}`); `kid` selects the key.
pub const AUTH_JWKS: &str = "auth_jwks";
/// `auth_hs256_secret` (secret): a shared secret; enables `HS256` when also allowed.
pub const AUTH_HS256_SECRET: &str = "auth_hs256_secret";
/// `auth_issuer`: the required `iss`, when set.
pub const AUTH_ISSUER: &str = "auth_issuer";
/// `auth_audience`: the required `aud`, when set.
pub const AUTH_AUDIENCE: &str = "auth_audience";
/// `auth_leeway_seconds`: clock skew allowed on `exp`, `nbf` and `iat`.
pub const AUTH_LEEWAY_SECONDS: &str = "auth_leeway_seconds";
/// `auth_tenants_claim`: the claim listing the subscriber's tenants.
pub const AUTH_TENANTS_CLAIM: &str = "auth_tenants_claim";
/// `auth_types_claim`: the claim listing the event types it may see.
pub const AUTH_TYPES_CLAIM: &str = "auth_types_claim";
/// `auth_permissions_claim`: the claim listing what else the token may do (`publish`).
pub const AUTH_PERMISSIONS_CLAIM: &str = "auth_permissions_claim";
/// `auth_query_token`: accept `?access_token=` (off by default: URLs end up in logs).
pub const AUTH_QUERY_TOKEN: &str = "auth_query_token";

/// Default of [`AUTH_ALGORITHMS`].
pub const DEFAULT_ALGORITHMS: &str = "EdDSA,ES256,RS256";
/// Default of [`AUTH_TENANTS_CLAIM`].
pub const DEFAULT_TENANTS_CLAIM: &str = "tenants";
/// Default of [`AUTH_TYPES_CLAIM`].
pub const DEFAULT_TYPES_CLAIM: &str = "types";
/// Default of [`AUTH_PERMISSIONS_CLAIM`].
pub const DEFAULT_PERMISSIONS_CLAIM: &str = "permissions";
/// Default of [`AUTH_LEEWAY_SECONDS`].
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "crm_events_session";
/// The query parameter of a token, when [`AUTH_QUERY_TOKEN`] allows it.
pub const QUERY_TOKEN_PARAMETER: &str = "access_token";
/// The `tenants` value that grants every tenant (operators).
pub const ALL_TENANTS: &str = "*";

/// Whether tokens are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every stream needs a valid token.
    Jwt,
    /// Anyone who reaches the service sees everything (trusted networks only).
    None,
}

/// Why a token was not accepted. The texts go into `error_description` and the JSON
/// body; none of them contains the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("a bearer token is required")]
    Missing,
    /// Not a JWT, or an `Authorization` header of another scheme.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not in the allowlist (`none` never is).
    #[error("the token's algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// No configured key has the token's `kid` (or its algorithm's family).
    #[error("no key matches the token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is missing.
    #[error("the token has no expiry (exp)")]
    NoExpiry,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("the token's audience is not accepted")]
    WrongAudience,
    /// A claim crm-events reads has the wrong type or an out-of-range value.
    #[error("the token's claims are malformed")]
    BadClaims,
    /// `sub` is missing or empty: every subscriber is someone (limits are per subject).
    #[error("the token has no subject (sub)")]
    NoSubject,
    /// The header's `crit` names extensions this service does not implement
    /// (RFC 7515 §4.1.11: such a token must be refused).
    #[error("the token requires extensions this service does not understand (crit)")]
    UnsupportedCritical,
}

impl AuthError {
    /// The `WWW-Authenticate` value for a 401 (RFC 6750): no error code when no
    /// token was presented, `invalid_token` with a description otherwise.
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::Missing => r#"Bearer realm="crm-events""#.to_string(),
            other => format!(
                r#"Bearer realm="crm-events", error="invalid_token", error_description="{other}""#
            ),
        }
    }

    /// The JSON body's `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            _ => "invalid_token",
        }
    }
}

/// Which tenants a subscriber may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    /// Every tenant, and events without one (`["*"]`).
    All,
    /// These tenants only.
    Only(BTreeSet<String>),
}

/// What a subscriber may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Its tenants.
    pub tenants: Tenants,
    /// Its event types (`None`: every type).
    pub types: Option<BTreeSet<String>>,
}

/// A verified subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub` (required in a token; empty only for [`Identity::anonymous`]).
    pub subject: String,
    /// What it may see.
    pub scope: Scope,
    /// `exp`, seconds since the epoch (`None` with auth off).
    pub expires_at: Option<u64>,
    /// What else it may do (`publish`), from the permissions claim.
    pub permissions: BTreeSet<String>,
}

impl Identity {
    /// Everyone, when auth is off.
    pub fn anonymous() -> Self {
        Self {
            subject: String::new(),
            scope: Scope {
                tenants: Tenants::All,
                types: None,
            },
            expires_at: None,
            permissions: BTreeSet::new(),
        }
    }

    /// The identity as JSON for the session route and the viewer (no token).
    pub fn to_json(&self) -> Value {
        let tenants: Vec<String> = match &self.scope.tenants {
            Tenants::All => vec![ALL_TENANTS.to_string()],
            Tenants::Only(t) => t.iter().cloned().collect(),
        };
        serde_json::json!({
            "subject": self.subject,
            "tenants": tenants,
            "types": self.scope.types,
            "expires_at": self.expires_at,
            "permissions": self.permissions,
        })
    }

    /// Whether this identity may see (and publish for) `tenant`.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        match &self.scope.tenants {
            Tenants::All => true,
            Tenants::Only(granted) => granted.contains(tenant),
        }
    }
}

/// A scope violation: a query filter asks for more than the token grants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Scope {
    /// The filters a stream runs with: the query's, which must lie inside the scope,
    /// or the scope itself where the query sets none.
    pub fn narrow(&self, query: &Filters) -> Result<Filters, Forbidden> {
        let tenants = match &self.tenants {
            Tenants::All => query.tenants.clone(),
            Tenants::Only(granted) => within(&query.tenants, granted, "tenant")?,
        };
        let types = match &self.types {
            None => query.types.clone(),
            Some(granted) => within(&query.types, granted, "event type")?,
        };
        Ok(Filters { tenants, types })
    }
}

/// `asked` when every item is granted, `granted` when nothing was asked; a scope
/// that grants nothing is refused outright (an empty filter would match everything).
fn within(
    asked: &[String],
    granted: &BTreeSet<String>,
    what: &str,
) -> Result<Vec<String>, Forbidden> {
    if granted.is_empty() {
        return Err(Forbidden(format!("the token grants no {what}")));
    }
    if asked.is_empty() {
        return Ok(granted.iter().cloned().collect());
    }
    match asked.iter().find(|a| !granted.contains(*a)) {
        Some(outside) => Err(Forbidden(format!(
            "the token does not grant {what} {outside:?}"
        ))),
        None => Ok(asked.to_vec()),
    }
}

/// One verification key.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

/// The auth settings and keys, ready to verify tokens.
pub struct Verifier {
    /// `jwt` or `none`.
    pub mode: Mode,
    algorithms: Vec<Algorithm>,
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    tenants_claim: String,
    types_claim: String,
    permissions_claim: String,
    /// Whether `?access_token=` is accepted.
    pub query_token: bool,
}

impl Verifier {
    /// Loads the settings and parses the keys. With `jwt` and no usable key, or an
    /// unknown algorithm, this is a configuration error (never "allow all").
    pub fn load(vars: &impl Variables) -> Result<Self, ConfigError> {
        let mode = match text(vars, AUTH_MODE, "jwt").to_ascii_lowercase().as_str() {
            "jwt" => Mode::Jwt,
            "none" => Mode::None,
            _ => return Err(ConfigError::new(AUTH_MODE, vars, "must be jwt or none")),
        };
        let hs_secret = vars.get(AUTH_HS256_SECRET).filter(|s| !s.is_empty());
        let algorithms = algorithms(vars, hs_secret.is_some())?;
        let mut keys = pem_keys(&vars.get(AUTH_PUBLIC_KEYS).unwrap_or_default())
            .map_err(|reason| ConfigError::secret(AUTH_PUBLIC_KEYS, reason))?;
        keys.extend(
            jwks_keys(&vars.get(AUTH_JWKS).unwrap_or_default())
                .map_err(|reason| ConfigError::secret(AUTH_JWKS, reason))?,
        );
        if let Some(secret) = hs_secret {
            keys.push(Key {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if mode == Mode::Jwt && keys.is_empty() {
            return Err(ConfigError::secret(
                AUTH_PUBLIC_KEYS,
                "auth_mode is jwt but no key is configured (auth_public_keys, auth_jwks or auth_hs256_secret)",
            ));
        }
        let optional = |name| Some(text(vars, name, "")).filter(|s| !s.is_empty());
        Ok(Self {
            mode,
            algorithms,
            keys,
            issuer: optional(AUTH_ISSUER),
            audience: optional(AUTH_AUDIENCE),
            leeway: number(vars, AUTH_LEEWAY_SECONDS, DEFAULT_LEEWAY_SECONDS, 0, 600)?,
            tenants_claim: text(vars, AUTH_TENANTS_CLAIM, DEFAULT_TENANTS_CLAIM),
            types_claim: text(vars, AUTH_TYPES_CLAIM, DEFAULT_TYPES_CLAIM),
            permissions_claim: text(vars, AUTH_PERMISSIONS_CLAIM, DEFAULT_PERMISSIONS_CLAIM),
            query_token: flag(vars, AUTH_QUERY_TOKEN)?,
        })
    }

    /// How many keys are configured (for `/readyz`; never the keys themselves).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Verifies `token` at `now` (seconds since the epoch) and reads its identity.
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        refuse_critical_extensions(token)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let family = header.alg.family();
        let of_family = || self.keys.iter().filter(move |k| k.key.family() == family);
        // A `kid` selects among the keys that have one; keys without one (PEM) are
        // tried when no key carries that `kid`.
        let by_kid: Vec<&Key> = match &header.kid {
            Some(kid) => of_family()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&Key> = if by_kid.is_empty() {
            of_family()
                .filter(|k| header.kid.is_none() || k.kid.is_none())
                .collect()
        } else {
            by_kid
        };
        let validation = self.validation(header.alg);
        let mut result = Err(AuthError::UnknownKey);
        for k in candidates {
            result = jsonwebtoken::decode::<Value>(token, &k.key, &validation)
                .map(|data| data.claims)
                .map_err(|e| map_error(e.kind()));
            if result != Err(AuthError::BadSignature) {
                break;
            }
        }
        self.identity(result?, now)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }

    /// The identity in verified claims, read strictly ([`read_claims`]); `iat` in the
    /// future is refused too.
    fn identity(&self, claims: Value, now: u64) -> Result<Identity, AuthError> {
        let names = ClaimNames {
            tenants: &self.tenants_claim,
            types: &self.types_claim,
            permissions: &self.permissions_claim,
        };
        let identity = read_claims(&claims, &names)?;
        let times = Times::read(&claims)?;
        if times
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.leeway))
        {
            return Err(AuthError::NotYetValid);
        }
        if times
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(AuthError::NotYetValid);
        }
        match identity.expires_at {
            None => Err(AuthError::NoExpiry),
            Some(exp) if exp.saturating_add(self.leeway) <= now => Err(AuthError::Expired),
            Some(_) => Ok(identity),
        }
    }
}

/// The names of the claims that carry a subscriber's scope (configurable, as
/// identity providers name them differently).
pub struct ClaimNames<'a> {
    /// The tenants claim ([`DEFAULT_TENANTS_CLAIM`]).
    pub tenants: &'a str,
    /// The event types claim ([`DEFAULT_TYPES_CLAIM`]).
    pub types: &'a str,
    /// The permissions claim ([`DEFAULT_PERMISSIONS_CLAIM`]).
    pub permissions: &'a str,
}

impl Default for ClaimNames<'static> {
    fn default() -> Self {
        Self {
            tenants: DEFAULT_TENANTS_CLAIM,
            types: DEFAULT_TYPES_CLAIM,
            permissions: DEFAULT_PERMISSIONS_CLAIM,
        }
    }
}

/// The latest NumericDate crm-events accepts: 9999-12-31T23:59:59Z. Later values are
/// refused rather than clamped, so no arithmetic on a time can overflow.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// The longest `sub` accepted, bytes (it names Redis keys of the per-subject limit).
pub const MAX_SUBJECT_BYTES: usize = 255;

/// The time claims, as whole seconds.
struct Times {
    iat: Option<u64>,
    nbf: Option<u64>,
}

impl Times {
    /// `iat` rounded down and `nbf` rounded up: a fraction never makes a token valid
    /// earlier than it says.
    fn read(claims: &Value) -> Result<Self, AuthError> {
        Ok(Self {
            iat: numeric_date(claims.get("iat"), f64::floor)?,
            nbf: numeric_date(claims.get("nbf"), f64::ceil)?,
        })
    }
}

/// A NumericDate claim (RFC 7519 §2: seconds since the epoch, a JSON number that
/// may have a fraction), rounded by `round` to whole seconds. Anything else — a
/// string, a negative or non-finite number, a time after [`MAX_NUMERIC_DATE`] — is
/// [`AuthError::BadClaims`]; a missing claim is `None`.
pub fn numeric_date(
    value: Option<&Value>,
    round: fn(f64) -> f64,
) -> Result<Option<u64>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(AuthError::BadClaims);
    };
    let seconds = match n.as_u64() {
        Some(whole) => whole,
        None => {
            let f = n.as_f64().ok_or(AuthError::BadClaims)?;
            if !f.is_finite() || f < 0.0 || f > MAX_NUMERIC_DATE as f64 {
                return Err(AuthError::BadClaims);
            }
            round(f) as u64
        }
    };
    if seconds > MAX_NUMERIC_DATE {
        return Err(AuthError::BadClaims);
    }
    Ok(Some(seconds))
}

/// Reads an identity from a token's claims, strictly, as the RFCs type them:
///
/// * `sub` is required, a non-empty string of at most [`MAX_SUBJECT_BYTES`];
/// * `exp` is a NumericDate, its fraction dropped (a token never lives longer than
///   it says);
/// * the tenants, types and permissions claims are JSON arrays of non-empty
///   strings — never a string to split, so no separator can smuggle in an item;
/// * `*` grants every tenant only as the one item of the tenants list: a list that
///   holds it beside a tenant is malformed, not "all".
///
/// Signatures and times are checked elsewhere; this only reads.
pub fn read_claims(claims: &Value, names: &ClaimNames) -> Result<Identity, AuthError> {
    let subject = match claims.get("sub") {
        None => return Err(AuthError::NoSubject),
        Some(Value::String(s)) if s.is_empty() => return Err(AuthError::NoSubject),
        Some(Value::String(s)) if s.len() <= MAX_SUBJECT_BYTES => s.clone(),
        Some(_) => return Err(AuthError::BadClaims),
    };
    let list = |name: &str| claims.get(name).map(string_list).transpose();
    let tenants = match list(names.tenants)? {
        None => Tenants::Only(BTreeSet::new()),
        Some(t) if t.contains(ALL_TENANTS) && t.len() == 1 => Tenants::All,
        Some(t) if t.contains(ALL_TENANTS) => return Err(AuthError::BadClaims),
        Some(t) => Tenants::Only(t),
    };
    Ok(Identity {
        subject,
        scope: Scope {
            tenants,
            types: list(names.types)?,
        },
        expires_at: numeric_date(claims.get("exp"), f64::floor)?,
        permissions: list(names.permissions)?.unwrap_or_default(),
    })
}

/// A list claim: a JSON array of non-empty strings (duplicates collapse).
fn string_list(v: &Value) -> Result<BTreeSet<String>, AuthError> {
    let Value::Array(items) = v else {
        return Err(AuthError::BadClaims);
    };
    items
        .iter()
        .map(|i| match i {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(AuthError::BadClaims),
        })
        .collect()
}

/// Refuses a token whose header carries `crit`: RFC 7515 §4.1.11 requires refusing
/// a JWS whose critical extensions the recipient does not understand, and
/// crm-events implements none. (`jsonwebtoken`'s header type drops the parameter,
/// so the header is read again as plain JSON.)
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    use base64::Engine;
    let encoded = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed)?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    if header.contains_key("crit") {
        return Err(AuthError::UnsupportedCritical);
    }
    Ok(())
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::NoExpiry,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            AuthError::BadClaims
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed
        }
        _ => AuthError::Malformed,
    }
}

/// The allowlist; `HS256` only when a shared secret is configured.
fn algorithms(vars: &impl Variables, has_secret: bool) -> Result<Vec<Algorithm>, ConfigError> {
    let raw = text(vars, AUTH_ALGORITHMS, DEFAULT_ALGORITHMS);
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let alg = Algorithm::from_str(name)
            .map_err(|_| ConfigError::new(AUTH_ALGORITHMS, vars, "unknown algorithm"))?;
        let hmac = alg.family() == jsonwebtoken::AlgorithmFamily::Hmac;
        if hmac && (alg != Algorithm::HS256 || !has_secret) {
            return Err(ConfigError::new(
                AUTH_ALGORITHMS,
                vars,
                "HS256 needs auth_hs256_secret (and HS384/HS512 are not supported)",
            ));
        }
        out.push(alg);
    }
    if has_secret && !out.contains(&Algorithm::HS256) {
        return Err(ConfigError::new(
            AUTH_ALGORITHMS,
            vars,
            "auth_hs256_secret is set but HS256 is not in auth_algorithms",
        ));
    }
    Ok(out)
}

/// Every PEM block of `text` as a key (Ed25519, EC or RSA public keys).
fn pem_keys(text: &str) -> Result<Vec<Key>, &'static str> {
    const END: &str = "-----END ";
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block_end = rest[start..]
            .find(END)
            .and_then(|e| rest[start + e..].find('\n').map(|n| start + e + n))
            .unwrap_or(rest.len());
        let block = &rest.as_bytes()[start..block_end];
        let key = DecodingKey::from_ed_pem(block)
            .or_else(|_| DecodingKey::from_ec_pem(block))
            .or_else(|_| DecodingKey::from_rsa_pem(block))
            .map_err(|_| "a PEM block is not an Ed25519, EC or RSA public key")?;
        keys.push(Key { kid: None, key });
        rest = &rest[block_end..];
    }
    if keys.is_empty() && !text.trim().is_empty() {
        return Err("no PEM public key found");
    }
    Ok(keys)
}

/// The asymmetric keys of a JWK set (symmetric `oct` keys are refused: HS256 has
/// exactly one key, `auth_hs256_secret`).
fn jwks_keys(text: &str) -> Result<Vec<Key>, &'static str> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let set: JwkSet = serde_json::from_str(text).map_err(|_| "not a JWK set")?;
    set.keys
        .iter()
        .map(|jwk| {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return Err("symmetric (oct) keys are not accepted in the JWK set");
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|_| "a JWK is not a usable public key")?;
            Ok(Key {
                kid: jwk.common.key_id.clone(),
                key,
            })
        })
        .collect()
}

/// Where a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer`.
    Header,
    /// The session cookie.
    Cookie,
    /// `?access_token=`.
    Query,
}

/// The request's token: the `Authorization` header first, then the session cookie,
/// then (only when `allow_query`) `?access_token=`. An `Authorization` header of
/// another scheme is malformed rather than ignored.
pub fn find_token(
    authorization: Option<&str>,
    cookie: Option<&str>,
    query: &str,
    allow_query: bool,
) -> Result<(String, Source), AuthError> {
    if let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) {
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        return Ok((token.to_string(), Source::Header));
    }
    if let Some(token) = cookie.and_then(session_cookie) {
        return Ok((token, Source::Cookie));
    }
    if allow_query {
        let found = form_urlencoded::parse(query.as_bytes())
            .find(|(k, v)| k == QUERY_TOKEN_PARAMETER && !v.is_empty());
        if let Some((_, token)) = found {
            return Ok((token.into_owned(), Source::Query));
        }
    }
    Err(AuthError::Missing)
}

/// Whether an `Authorization` header carries exactly `Bearer <secret>` (compared in
/// constant time; for the `/metrics` scrape token).
pub fn bearer_matches(authorization: Option<&str>, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    match find_token(authorization, None, "", false) {
        Ok((token, _)) => token.as_bytes().ct_eq(secret.as_bytes()).into(),
        Err(_) => false,
    }
}

/// The session cookie's value in a `Cookie` header.
fn session_cookie(header: &str) -> Option<String> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value of a session holding `token` for `max_age` seconds.
pub fn session_set_cookie(token: &str, max_age: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    )
}

/// The `Set-Cookie` value that ends the session.
pub fn session_clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tenants: &[&str], types: Option<&[&str]>) -> Scope {
        let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        Scope {
            tenants: if tenants == ["*"] {
                Tenants::All
            } else {
                Tenants::Only(set(tenants))
            },
            types: types.map(set),
        }
    }

    fn filters(tenants: &[&str], types: &[&str]) -> Filters {
        Filters {
            tenants: tenants.iter().map(|s| s.to_string()).collect(),
            types: types.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn query_filters_narrow_the_scope_and_never_widen_it() {
        let s = scope(&["a", "b"], None);
        assert_eq!(
            s.narrow(&filters(&[], &[])).unwrap(),
            filters(&["a", "b"], &[])
        );
        assert_eq!(
            s.narrow(&filters(&["b"], &["X"])).unwrap(),
            filters(&["b"], &["X"])
        );
        assert!(s.narrow(&filters(&["c"], &[])).is_err());
        let typed = scope(&["*"], Some(&["JobCreated"]));
        assert_eq!(
            typed.narrow(&filters(&[], &[])).unwrap(),
            filters(&[], &["JobCreated"])
        );
        assert!(typed.narrow(&filters(&[], &["JobDeleted"])).is_err());
        // No tenants granted (or no tenants claim): refused (deny by default).
        assert!(scope(&[], None).narrow(&filters(&[], &[])).is_err());
        assert!(scope(&["*"], Some(&[])).narrow(&filters(&[], &[])).is_err());
    }

    #[test]
    fn tokens_come_from_header_cookie_then_query_when_allowed() {
        let cookie = Some("theme=dark; crm_events_session=abc.def.ghi");
        assert_eq!(
            find_token(Some("Bearer x.y.z"), cookie, "", false)
                .unwrap()
                .1,
            Source::Header
        );
        assert_eq!(
            find_token(None, cookie, "", false).unwrap(),
            ("abc.def.ghi".into(), Source::Cookie)
        );
        assert_eq!(
            find_token(None, None, "access_token=q.r.s", false),
            Err(AuthError::Missing)
        );
        assert_eq!(
            find_token(None, None, "access_token=q.r.s", true)
                .unwrap()
                .1,
            Source::Query
        );
        assert_eq!(
            find_token(Some("Basic dXNlcg=="), None, "", false),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            find_token(Some("Bearer "), None, "", false),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn scrape_token_must_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn www_authenticate_follows_rfc_6750() {
        assert_eq!(
            AuthError::Missing.www_authenticate(),
            r#"Bearer realm="crm-events""#
        );
        let expired = AuthError::Expired.www_authenticate();
        assert!(expired.contains(r#"error="invalid_token""#));
        assert!(expired.contains(r#"error_description="the token has expired""#));
    }

    fn read(claims: Value) -> Result<Identity, AuthError> {
        read_claims(&claims, &ClaimNames::default())
    }

    #[test]
    fn list_claims_are_json_arrays_of_strings_only() {
        let base = |tenants: Value| serde_json::json!({"sub": "u", "exp": 1, "tenants": tenants});
        let only = |names: &[&str]| Tenants::Only(names.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            read(base(serde_json::json!(["a", "b"])))
                .unwrap()
                .scope
                .tenants,
            only(&["a", "b"])
        );
        // A string is never split: "<tenant>,*" must not read as a grant of "*".
        for bad in [
            serde_json::json!("a,*"),
            serde_json::json!("a b"),
            serde_json::json!([1]),
            serde_json::json!([""]),
            serde_json::json!({"a": true}),
        ] {
            assert_eq!(
                read(base(bad.clone())).err(),
                Some(AuthError::BadClaims),
                "{bad}"
            );
        }
        assert_eq!(
            read(serde_json::json!({"sub": "u", "exp": 1, "types": "JobCreated"})).err(),
            Some(AuthError::BadClaims)
        );
    }

    #[test]
    fn the_all_tenants_grant_is_only_a_lone_star() {
        let tenants =
            |list: Value| read(serde_json::json!({"sub": "u", "exp": 1, "tenants": list}));
        assert_eq!(
            tenants(serde_json::json!(["*"])).unwrap().scope.tenants,
            Tenants::All
        );
        assert_eq!(
            tenants(serde_json::json!(["a", "*"])).err(),
            Some(AuthError::BadClaims)
        );
        assert_eq!(
            tenants(serde_json::json!(["*", "*"]))
                .unwrap()
                .scope
                .tenants,
            Tenants::All
        );
    }

    #[test]
    fn the_subject_is_required_and_a_string() {
        assert_eq!(
            read(serde_json::json!({"exp": 1})).err(),
            Some(AuthError::NoSubject)
        );
        assert_eq!(
            read(serde_json::json!({"sub": "", "exp": 1})).err(),
            Some(AuthError::NoSubject)
        );
        assert_eq!(
            read(serde_json::json!({"sub": 7, "exp": 1})).err(),
            Some(AuthError::BadClaims)
        );
        let long = "x".repeat(MAX_SUBJECT_BYTES + 1);
        assert_eq!(
            read(serde_json::json!({"sub": long, "exp": 1})).err(),
            Some(AuthError::BadClaims)
        );
        assert_eq!(
            read(serde_json::json!({"sub": "ann", "exp": 1}))
                .unwrap()
                .subject,
            "ann"
        );
    }

    #[test]
    fn numeric_dates_follow_rfc_7519() {
        let exp = |v: Value| read(serde_json::json!({"sub": "u", "exp": v})).map(|i| i.expires_at);
        assert_eq!(exp(serde_json::json!(100)), Ok(Some(100)));
        // A fraction is allowed and rounded down for exp (never a longer life).
        assert_eq!(exp(serde_json::json!(100.9)), Ok(Some(100)));
        assert_eq!(exp(serde_json::json!(1e3)), Ok(Some(1000)));
        for bad in [
            serde_json::json!(u64::MAX),
            serde_json::json!(MAX_NUMERIC_DATE + 1),
            serde_json::json!(1e300),
            serde_json::json!(-1),
            serde_json::json!(-0.5),
            serde_json::json!("100"),
            serde_json::json!(null),
        ] {
            assert_eq!(exp(bad.clone()), Err(AuthError::BadClaims), "{bad}");
        }
        assert_eq!(
            exp(serde_json::json!(MAX_NUMERIC_DATE)),
            Ok(Some(MAX_NUMERIC_DATE))
        );
        // nbf rounds up: a fraction never makes a token valid earlier.
        assert_eq!(
            numeric_date(Some(&serde_json::json!(5.1)), f64::ceil),
            Ok(Some(6))
        );
    }

    #[test]
    fn a_critical_header_extension_is_refused() {
        use base64::Engine;
        let enc = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let token = |h: Value| format!("{}.{}.sig", enc(h), enc(serde_json::json!({})));
        assert_eq!(
            refuse_critical_extensions(&token(
                serde_json::json!({"alg": "EdDSA", "crit": ["exp"], "exp": 1})
            )),
            Err(AuthError::UnsupportedCritical)
        );
        assert_eq!(
            refuse_critical_extensions(&token(serde_json::json!({"alg": "EdDSA"}))),
            Ok(())
        );
        assert_eq!(
            refuse_critical_extensions("!!.x.y"),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn configuration_refuses_what_would_be_unsafe() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        // jwt without keys is an error, not "allow all".
        assert!(Verifier::load(&vars(&[])).is_err());
        assert_eq!(
            Verifier::load(&vars(&[(AUTH_MODE, "none")])).unwrap().mode,
            Mode::None
        );
        // HS256 only with a secret, and a secret only with HS256 allowed.
        assert!(Verifier::load(&vars(&[(AUTH_MODE, "none"), (AUTH_ALGORITHMS, "HS256")])).is_err());
        assert!(Verifier::load(&vars(&[(AUTH_HS256_SECRET, "s3cret")])).is_err());
        let hs = Verifier::load(&vars(&[
            (AUTH_HS256_SECRET, "s3cret"),
            (AUTH_ALGORITHMS, "HS256"),
        ]));
        assert_eq!(hs.unwrap().key_count(), 1);
        assert!(Verifier::load(&vars(&[(AUTH_MODE, "maybe")])).is_err());
        let bad_pem = Verifier::load(&vars(&[(
            AUTH_PUBLIC_KEYS,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )]));
        let e = bad_pem.err().unwrap();
        assert!(
            !e.to_string().contains("AAAA"),
            "secret values are never echoed: {e}"
        );
    }
}
