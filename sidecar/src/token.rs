//! Keys and tokens for operators and tests: `crm-events-sidecar keygen` writes a key
//! pair, `crm-events-sidecar token` mints a JWT the app accepts, from a private key
//! file. For testing and demos; in production tokens come from your identity
//! provider (see docs/src/access-control.md).

use anyhow::{bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use serde_json::{json, Value};
use std::str::FromStr;

/// A key pair as PEM: `(private PKCS#8, public SPKI)`.
pub struct KeyPair {
    /// The private key (keep it secret).
    pub private_pem: String,
    /// The public key (the app's `auth_public_keys`).
    pub public_pem: String,
}

/// Generates a key pair for `alg` (`EdDSA`, `ES256` or `RS256`).
pub fn generate(alg: Algorithm) -> Result<KeyPair> {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
    let (private_pem, public_pem) = match alg {
        Algorithm::EdDSA => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            (
                key.to_pkcs8_pem(LineEnding::LF)?.to_string(),
                key.verifying_key().to_public_key_pem(LineEnding::LF)?,
            )
        }
        Algorithm::ES256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            (
                key.to_pkcs8_pem(LineEnding::LF)?.to_string(),
                key.public_key().to_public_key_pem(LineEnding::LF)?,
            )
        }
        Algorithm::RS256 => {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048)?;
            (
                key.to_pkcs8_pem(LineEnding::LF)?.to_string(),
                key.to_public_key().to_public_key_pem(LineEnding::LF)?,
            )
        }
        other => bail!("key generation supports EdDSA, ES256 and RS256, not {other:?}"),
    };
    Ok(KeyPair {
        private_pem,
        public_pem,
    })
}

/// What a token says.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// `sub`.
    pub subject: String,
    /// `tenants` (`["*"]` for every tenant).
    pub tenants: Vec<String>,
    /// `types` (omitted when empty: every type).
    pub types: Vec<String>,
    /// `permissions` (omitted when empty), e.g. `publish` for `POST /crm-events`.
    pub permissions: Vec<String>,
    /// Lifetime from now, seconds (`exp` = now + ttl).
    pub ttl_seconds: u64,
    /// `iss`, when set.
    pub issuer: Option<String>,
    /// `aud`, when set.
    pub audience: Option<String>,
}

impl Claims {
    /// The JWT claims at `now` (seconds since the epoch).
    pub fn to_json(&self, now: u64) -> Value {
        let mut claims = json!({
            "sub": self.subject,
            "tenants": self.tenants,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_seconds,
        });
        if !self.types.is_empty() {
            claims["types"] = json!(self.types);
        }
        if !self.permissions.is_empty() {
            claims["permissions"] = json!(self.permissions);
        }
        if let Some(iss) = &self.issuer {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = &self.audience {
            claims["aud"] = json!(aud);
        }
        claims
    }
}

/// Signs `claims` with a private key (PKCS#8 PEM, or the secret itself for HS256).
pub fn sign(alg: Algorithm, key: &[u8], kid: Option<&str>, claims: &Value) -> Result<String> {
    let key = match alg.family() {
        jsonwebtoken::AlgorithmFamily::Ed => EncodingKey::from_ed_pem(key),
        jsonwebtoken::AlgorithmFamily::Ec => EncodingKey::from_ec_pem(key),
        jsonwebtoken::AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(key),
        jsonwebtoken::AlgorithmFamily::Hmac => Ok(EncodingKey::from_secret(key)),
    }
    .with_context(|| format!("the key is not a {alg:?} private key (PKCS#8 PEM)"))?;
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    Ok(jsonwebtoken::encode(&header, claims, &key)?)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `90`, `90s`, `15m`, `1h` or `2d` as seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    Ok(n * scale)
}

/// Parses an algorithm name (`EdDSA`, `ES256`, `RS256`, `HS256`).
pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(s).map_err(|_| format!("unknown algorithm {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("5y").is_err());
    }

    #[test]
    fn claims_carry_scope_and_times() {
        let c = Claims {
            subject: "ops".into(),
            tenants: vec!["*".into()],
            ttl_seconds: 60,
            ..Claims::default()
        };
        let v = c.to_json(1000);
        assert_eq!(v["exp"], 1060);
        assert_eq!(v["tenants"], json!(["*"]));
        assert!(v.get("types").is_none());
    }

    #[test]
    fn generated_ed25519_keys_sign_tokens() {
        let pair = generate(Algorithm::EdDSA).unwrap();
        assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let token = sign(
            Algorithm::EdDSA,
            pair.private_pem.as_bytes(),
            Some("k1"),
            &json!({"exp": 1}),
        )
        .unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert!(sign(
            Algorithm::ES256,
            pair.private_pem.as_bytes(),
            None,
            &json!({})
        )
        .is_err());
    }
}
