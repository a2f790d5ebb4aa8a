//! RS256-signed JSON Web Tokens, as warehouses ask them of service accounts
//! and key pairs (BigQuery's service-account grant, Snowflake's key-pair
//! login): `base64url(header).base64url(claims).base64url(signature)`, the
//! signature RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::sha2::{Digest, Sha256};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;

/// An RSA private key read from PEM: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
/// (`BEGIN RSA PRIVATE KEY`). The error never shows the key.
pub fn private_key(pem: &str) -> Result<RsaPrivateKey, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    let pem = pem.trim();
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            "the private key is not an unencrypted RSA key in PEM (-----BEGIN PRIVATE KEY----- or \
             -----BEGIN RSA PRIVATE KEY-----)"
                .to_string()
        })
}

/// A signed token of `claims`, with `kid` in its header when given.
pub fn sign_rs256(claims: &serde_json::Value, key: &RsaPrivateKey, kid: Option<&str>) -> String {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = serde_json::Value::String(kid.to_string());
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// `SHA256:` and the base64 SHA-256 of the public key's DER
/// (SubjectPublicKeyInfo): how Snowflake names the key a token is signed with.
pub fn public_key_fingerprint(key: &RsaPrivateKey) -> Result<String, String> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| format!("the public key cannot be encoded: {e}"))?;
    Ok(format!("SHA256:{}", STANDARD.encode(Sha256::digest(der.as_bytes()))))
}

/// The claims of a token, unverified: for the loopback fakes, which check
/// claims and leave the signature to `verify_rs256`.
pub fn claims_of(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// Whether `token` is signed by the private key whose public half is given.
pub fn verify_rs256(token: &str, public_key: &rsa::RsaPublicKey) -> bool {
    use rsa::signature::Verifier;
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let Ok(signature) = rsa::pkcs1v15::Signature::try_from(signature.as_slice()) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public_key.clone())
        .verify(signing_input.as_bytes(), &signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit test key made for these tests; it guards nothing.
    pub(crate) fn test_key() -> RsaPrivateKey {
        use std::sync::OnceLock;
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("a test key"))
            .clone()
    }

    #[test]
    fn a_token_verifies_with_its_public_key_and_carries_its_claims() {
        let key = test_key();
        let claims = serde_json::json!({"iss": "svc@project.iam.gserviceaccount.com", "exp": 1700003600});
        let token = sign_rs256(&claims, &key, Some("key-1"));
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(claims_of(&token), Some(claims));
        assert!(verify_rs256(&token, &key.to_public_key()));
        let other = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        assert!(!verify_rs256(&token, &other.to_public_key()));
        let tampered = token.replacen('.', ".e30", 1);
        assert!(!verify_rs256(&tampered, &key.to_public_key()));
        assert!(public_key_fingerprint(&key).unwrap().starts_with("SHA256:"));
    }

    #[test]
    fn a_key_that_is_not_pem_is_named_without_its_text() {
        let error = private_key("-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----").unwrap_err();
        assert!(
            error.contains("not an unencrypted RSA key") && !error.contains("secretstuff"),
            "{error}"
        );
        use rsa::pkcs8::EncodePrivateKey;
        let pem = test_key().to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert!(private_key(&pem).is_ok());
    }
}
