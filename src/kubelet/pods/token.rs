//! Projected service-account token rotation, as upstream's kubelet token manager
//! (`pkg/kubelet/token`): a token is requested again once 80 % of its lifetime has passed or
//! it is older than 24 h, whichever comes first, and the projected volume holding it is
//! rewritten with the atomic writer (`..data` swap), so a reader sees the old token or the new
//! one, never a torn file.
//!
//! The state is the token file itself: its `iat`/`exp` claims say when it is due, so a
//! restarted kubelet rotates on time without a cache. A file that is missing or whose claims
//! cannot be read is due at once. Nothing here trusts the token beyond reading two numbers
//! (the apiserver signed it; the kubelet only schedules its renewal).

use std::path::Path;

use base64::Engine;
use k8s_openapi::api::core::v1::ProjectedVolumeSource;

/// Upstream's `maxTTL`: a token is renewed after a day whatever its lifetime.
const MAX_AGE_SECS: i64 = 24 * 60 * 60;

/// The fraction of the lifetime after which a token is renewed (upstream 0.8). The tests'
/// `RAMPART_TEST_TOKEN_REFRESH_FRACTION` shortens it (the apiserver issues at least 600 s).
fn refresh_fraction() -> f64 {
    crate::test_hooks::token_refresh_fraction()
        .filter(|f| *f > 0.0 && *f <= 1.0)
        .unwrap_or(0.8)
}

/// `(iat, exp)` of a JWT, in Unix seconds.
pub fn claims(token: &str) -> Option<(i64, i64)> {
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((v["iat"].as_i64()?, v["exp"].as_i64()?))
}

/// Upstream's `requiresRefresh` at time `now` (Unix seconds).
pub fn requires_refresh(iat: i64, exp: i64, now: i64, fraction: f64) -> bool {
    let ttl = exp.saturating_sub(iat).max(0);
    let renew_at = iat.saturating_add((ttl as f64 * fraction) as i64);
    now >= renew_at || now >= iat.saturating_add(MAX_AGE_SECS)
}

/// Whether any service-account token of this projected volume (written under `dir`) is due.
pub fn due(dir: &Path, p: &ProjectedVolumeSource) -> bool {
    let now = jiff::Timestamp::now().as_second();
    let fraction = refresh_fraction();
    p.sources
        .iter()
        .flatten()
        .filter_map(|s| s.service_account_token.as_ref())
        .any(|t| {
            let Ok(token) = std::fs::read_to_string(dir.join(&t.path)) else {
                return true;
            };
            claims(&token).is_none_or(|(iat, exp)| requires_refresh(iat, exp, now, fraction))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(iat: i64, exp: i64) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"RS256"}"#),
            e.encode(format!(r#"{{"iat":{iat},"exp":{exp},"sub":"x"}}"#))
        )
    }

    #[test]
    fn renews_at_80_percent_or_after_a_day() {
        assert_eq!(claims(&jwt(1000, 4600)), Some((1000, 4600)));
        assert_eq!(claims("not.a-jwt"), None);
        assert_eq!(claims(""), None);
        // An hour-long token: due from 48 minutes on.
        assert!(!requires_refresh(0, 3600, 2879, 0.8));
        assert!(requires_refresh(0, 3600, 2880, 0.8));
        // A year-long token: due after 24 h.
        assert!(!requires_refresh(0, 365 * 86400, 86399, 0.8));
        assert!(requires_refresh(0, 365 * 86400, 86400, 0.8));
        // Nonsense claims (exp before iat) renew at once.
        assert!(requires_refresh(100, 50, 100, 0.8));
    }

    #[test]
    fn a_missing_or_unreadable_token_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let p: ProjectedVolumeSource = serde_json::from_value(serde_json::json!({"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}))
        .unwrap();
        assert!(due(dir.path(), &p));
        std::fs::write(dir.path().join("token"), "garbage").unwrap();
        assert!(due(dir.path(), &p));
        let now = jiff::Timestamp::now().as_second();
        std::fs::write(dir.path().join("token"), jwt(now, now + 3600)).unwrap();
        assert!(!due(dir.path(), &p));
        std::fs::write(dir.path().join("token"), jwt(now - 3000, now + 600)).unwrap();
        assert!(due(dir.path(), &p));
    }
}
