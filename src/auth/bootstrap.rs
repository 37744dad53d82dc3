//! Join (bootstrap) tokens, as upstream's bootstrap-token authenticator: a bearer token
//! `<id>.<secret>` (id `[a-z0-9]{6}`, secret `[a-z0-9]{16}`) is valid while the Secret
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token` holds the same
//! secret, allows `usage-bootstrap-authentication` and has not expired. The user is
//! `system:bootstrap:<id>` in `system:bootstrappers` plus the Secret's `auth-extra-groups`.
//!
//! Also the printed join token `R10<sha256 hex of the CA bundle>::<id>.<secret>` (k3s' "secure"
//! format) the agent parses, and the failed-attempt limiter.
//!
//! Invariants: secrets are compared in constant time and never appear in messages or logs.
//!
//! Failure back-off (our choice, upstream has none), keyed by **token id**, never by address:
//! an id's first 5 failures are plain 401s; each further failure answers 429 with a
//! Retry-After that doubles (1 s, 2 s, 4 s ... capped at 5 minutes) until the id has been quiet
//! for 10 minutes or its correct secret is presented. A correct secret is always accepted: it
//! is checked before the back-off is consulted, so nobody else's failures (another token, a
//! neighbour behind the same NAT, or someone hammering this very id) can refuse it. The back-off
//! is a signal to misconfigured clients and a bound on log noise, not the secret's protection:
//! 16 characters of `[a-z0-9]` (~82 bits) cannot be found by online guessing at any rate a
//! server can answer. At most 10,000 ids are tracked; beyond that an untracked id gets 401.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;

use super::UserInfo;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const GROUP: &str = "system:bootstrappers";
/// The extra group Rampart's join tokens carry (upstream kubeadm's default-node-token group).
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:rampart:default-node-token";
/// The extra group of server join tokens (`rampart token create --role server`): the only
/// group `/rampart/v1/server-bootstrap` answers (see `apiserver::endpoints::server_bootstrap`).
pub const SERVER_TOKEN_GROUP: &str = "system:bootstrappers:rampart:server-token";
/// Prefix of the printed join token (k3s-style "K10", ours "R10").
pub const JOIN_PREFIX: &str = "R10";

/// The bearer part `<id>.<secret>` of a join token.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerToken({}.<redacted>)", self.id)
    }
}

impl BearerToken {
    /// `None` unless `s` has the exact shape `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub fn parse(s: &str) -> Option<Self> {
        let (id, secret) = s.split_once('.')?;
        let ok = |x: &str, n: usize| {
            x.len() == n
                && x.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (ok(id, 6) && ok(secret, 16)).then(|| BearerToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// A fresh random token.
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        BearerToken {
            id: pick(6),
            secret: pick(16),
        }
    }

    pub fn as_bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }
}

/// Why a printed join token cannot be used (the text names the part, never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the join token is malformed: it must start with {}", JOIN_PREFIX)]
    Prefix,
    #[error("the join token is malformed: expected R10<CA hash>::<id>.<secret>")]
    Shape,
    #[error("the join token is malformed: the CA hash must be 64 hex digits")]
    CaHash,
    #[error("the join token is malformed: expected <6 characters>.<16 characters> after ::")]
    Bearer,
}

/// A printed join token: the CA bundle's hash plus the bearer token.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the CA bundle as `/cacerts` serves it.
    pub ca_hash: String,
    pub bearer: BearerToken,
}

impl JoinToken {
    /// Parse `R10<64 hex>::<id>.<secret>`. The error never repeats the token.
    pub fn parse(s: &str) -> Result<Self, Malformed> {
        let s = s.trim();
        let rest = s.strip_prefix(JOIN_PREFIX).ok_or(Malformed::Prefix)?;
        let (hash, bearer) = rest.split_once("::").ok_or(Malformed::Shape)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Malformed::CaHash);
        }
        let bearer = BearerToken::parse(bearer).ok_or(Malformed::Bearer)?;
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            bearer,
        })
    }

    pub fn render(&self) -> String {
        format!("{JOIN_PREFIX}{}::{}", self.ca_hash, self.bearer.as_bearer())
    }
}

/// Equality whose time depends only on the lengths (`subtle`: a fold and `black_box` are not
/// guaranteed to stay constant-time under the optimiser).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Why a join token is refused at authentication; `Display` is the client's 401 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// One reason for every failed check: a client learns nothing about which one failed.
    #[error("the join token is invalid or has expired")]
    Invalid,
    /// The token Secrets could not be read (the cause is logged, not sent).
    #[error("cannot read join tokens right now")]
    Unverifiable,
}

/// Check `token` against the Secret found for its id (`None`: no such Secret). `now` is
/// seconds since the epoch. On success, the user the token authenticates as.
pub fn check(token: &BearerToken, secret: Option<&Secret>, now: i64) -> Result<UserInfo, Rejected> {
    let invalid = || Rejected::Invalid;
    let secret = secret.ok_or_else(invalid)?;
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return Err(invalid());
    }
    let data: BTreeMap<&str, &[u8]> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
        .collect();
    let get = |k: &str| data.get(k).copied().unwrap_or_default();
    if get("token-id") != token.id.as_bytes() {
        return Err(invalid());
    }
    if !constant_time_eq(get("token-secret"), token.secret.as_bytes()) {
        return Err(invalid());
    }
    if get("usage-bootstrap-authentication") != b"true" {
        return Err(invalid());
    }
    if let Some(exp) = data.get("expiration") {
        let exp = std::str::from_utf8(exp)
            .ok()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .ok_or_else(invalid)?;
        if now >= exp.as_second() {
            return Err(invalid());
        }
    }
    let mut groups = vec![GROUP.to_string()];
    for g in std::str::from_utf8(get("auth-extra-groups"))
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        // Upstream only allows extra groups under system:bootstrappers:.
        if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    Ok(UserInfo {
        name: format!("system:bootstrap:{}", token.id),
        groups,
        ..Default::default()
    }
    .with_authenticated_group())
}

/// Failed-attempt back-off keyed by token id (see the module docs).
pub struct Limiter {
    /// Failures answered with a plain 401 before the back-off starts.
    free: u32,
    /// The first back-off; each further failure doubles it.
    base: Duration,
    max: Duration,
    /// An id without failures for this long starts over.
    forget: Duration,
    /// Ids tracked at most (memory bound against floods of made-up ids).
    capacity: usize,
    state: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    failures: u32,
    last: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(5, Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Limiter {
    pub fn new(free: u32, base: Duration, max: Duration) -> Self {
        Limiter {
            free,
            base,
            max,
            forget: max * 2,
            capacity: 10_000,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Record a failed attempt for `id`; the back-off the client must now observe, if any
    /// (`None`: answer 401 as usual).
    pub fn fail(&self, id: &str, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.contains_key(id) && state.len() >= self.capacity {
            let forget = self.forget;
            state.retain(|_, e| now.saturating_duration_since(e.last) < forget);
            if state.len() >= self.capacity {
                return None;
            }
        }
        let e = state.entry(id.to_string()).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now.saturating_duration_since(e.last) >= self.forget {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        let over = e.failures.checked_sub(self.free + 1)?;
        // 2^over, saturating well before overflow: anything past the cap is the cap.
        let factor = 1u32 << over.min(20);
        Some(self.base.saturating_mul(factor).min(self.max))
    }

    /// The first back-off an id gets (to log once per episode).
    pub fn first_back_off(&self) -> Duration {
        self.base.min(self.max)
    }

    /// The correct secret was presented: forgive the id's failures.
    pub fn succeed(&self, id: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(id: &str, sec: &str, exp: &str) -> Secret {
        let mut data = BTreeMap::new();
        for (k, v) in [
            ("token-id", id),
            ("token-secret", sec),
            ("expiration", exp),
            ("usage-bootstrap-authentication", "true"),
            ("auth-extra-groups", NODE_TOKEN_GROUP),
        ] {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        }
        Secret {
            type_: Some(SECRET_TYPE.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn parses_shapes() {
        assert!(BearerToken::parse("abcdef.0123456789abcdef").is_some());
        assert!(BearerToken::parse("abcdef.0123456789abcde").is_none());
        assert!(BearerToken::parse("ABCDEF.0123456789abcdef").is_none());
        assert!(BearerToken::parse("eyJhbGciOi.x.y").is_none());
        let t = BearerToken::generate();
        let j = JoinToken {
            ca_hash: "ab".repeat(32),
            bearer: t.clone(),
        };
        assert_eq!(JoinToken::parse(&j.render()).unwrap(), j);
        assert!(JoinToken::parse("garbage").is_err());
        assert!(JoinToken::parse("R10abc::abcdef.0123456789abcdef").is_err());
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn checks_secret_expiry_and_groups() {
        let t = BearerToken::parse("abcdef.0123456789abcdef").unwrap();
        let now = jiff::Timestamp::now().as_second();
        let good = secret("abcdef", "0123456789abcdef", "2999-01-01T00:00:00Z");
        let user = check(&t, Some(&good), now).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert!(user.groups.contains(&GROUP.to_string()));
        assert!(user.groups.contains(&NODE_TOKEN_GROUP.to_string()));
        assert!(user.groups.contains(&"system:authenticated".to_string()));
        let wrong = secret("abcdef", "0123456789abcdeX", "2999-01-01T00:00:00Z");
        assert!(check(&t, Some(&wrong), now).is_err());
        let expired = secret("abcdef", "0123456789abcdef", "2000-01-01T00:00:00Z");
        assert!(check(&t, Some(&expired), now).is_err());
        assert!(check(&t, None, now).is_err());
    }

    #[test]
    fn back_off_is_per_id_and_doubles() {
        let l = Limiter::new(5, Duration::from_secs(1), Duration::from_secs(300));
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.fail("aaaaaa", now), None);
        }
        let waits: Vec<u64> = (0..4)
            .map(|_| l.fail("aaaaaa", now).unwrap().as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8]);
        // Another id is not affected.
        assert_eq!(l.fail("bbbbbb", now), None);
        // Capped, and forgotten after a quiet period.
        for _ in 0..40 {
            l.fail("aaaaaa", now);
        }
        assert_eq!(l.fail("aaaaaa", now), Some(Duration::from_secs(300)));
        assert_eq!(l.fail("aaaaaa", now + Duration::from_secs(700)), None);
        // Success forgives.
        for _ in 0..7 {
            l.fail("cccccc", now);
        }
        l.succeed("cccccc");
        assert_eq!(l.fail("cccccc", now), None);
    }

    #[test]
    fn back_off_memory_is_bounded() {
        let mut l = Limiter::new(0, Duration::from_secs(1), Duration::from_secs(300));
        l.capacity = 100;
        let now = Instant::now();
        for i in 0..1000 {
            l.fail(&format!("{i:06}"), now);
        }
        assert!(l.state.lock().unwrap().len() <= 100);
        // Untracked ids get plain 401s; tracked ones keep backing off.
        assert_eq!(l.fail("999999", now), None);
        assert!(l.fail("000001", now).is_some());
    }
}
