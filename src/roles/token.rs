//! `rampart token create|list|delete`: join tokens stored as upstream bootstrap-token Secrets
//! (`kube-system/bootstrap-token-<id>`), managed through the API with an admin kubeconfig.
//! The printed token pins the cluster CA: `R10<sha256 of /cacerts>::<id>.<secret>`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use sha2::{Digest, Sha256};

use crate::auth::bootstrap::{self, BearerToken, JoinToken};
use crate::cli::{TokenArgs, TokenCommand, TokenRole};

pub async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let kubeconfig: PathBuf = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    let client = crate::client::from_kubeconfig(&kubeconfig)
        .await
        .context("cannot reach the cluster")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            role,
        } => {
            let ttl = parse_ttl(&ttl)?;
            let ca = fetch_ca(&client).await?;
            let token = create(&client, ttl, &description, &ca, role).await?;
            println!("{}", token.render());
            Ok(())
        }
        TokenCommand::List => {
            let list = secrets
                .list(&ListParams::default())
                .await
                .context("cannot list join tokens")?;
            println!("{:<8} {:<10} {:<22} DESCRIPTION", "ID", "TTL", "EXPIRES");
            let now = jiff::Timestamp::now();
            for s in list
                .items
                .iter()
                .filter(|s| s.type_.as_deref() == Some(bootstrap::SECRET_TYPE))
            {
                let get = |k: &str| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .map(|v| String::from_utf8_lossy(&v.0).to_string())
                        .unwrap_or_default()
                };
                let (ttl, expires) = match get("expiration").parse::<jiff::Timestamp>() {
                    Ok(exp) => {
                        let left = exp.as_second() - now.as_second();
                        let ttl = if left <= 0 {
                            "<expired>".to_string()
                        } else {
                            human(left as u64)
                        };
                        (ttl, exp.to_string())
                    }
                    Err(_) => ("<forever>".into(), "<never>".into()),
                };
                println!(
                    "{:<8} {:<10} {:<22} {}",
                    get("token-id"),
                    ttl,
                    expires,
                    get("description")
                );
            }
            Ok(())
        }
        TokenCommand::Delete { id } => {
            let id = id.split('.').next().unwrap_or_default().to_string();
            let id = id.rsplit("::").next().unwrap_or_default().to_string();
            if id.len() != 6
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                bail!("{id:?} is not a join token id (6 characters a-z, 0-9)");
            }
            let name = format!("{}{id}", bootstrap::SECRET_PREFIX);
            match secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    println!("join token {id} deleted");
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 404 => bail!("no join token with id {id}"),
                Err(e) => Err(e).context("cannot delete the join token"),
            }
        }
    }
}

/// Store a new join token valid for `ttl` seconds (`None`: forever) pinned to `ca_pem`.
/// Its extra group says what it joins: agent tokens carry the node-token group and can never
/// fetch a server's keys; server tokens carry the server-token group only.
pub async fn create(
    client: &kube::Client,
    ttl: Option<u64>,
    description: &str,
    ca_pem: &str,
    role: TokenRole,
) -> anyhow::Result<JoinToken> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let bearer = BearerToken::generate();
    let mut data = BTreeMap::new();
    data.insert("token-id".to_string(), bearer.id.clone());
    data.insert("token-secret".to_string(), bearer.secret.clone());
    data.insert("usage-bootstrap-authentication".into(), "true".into());
    let group = match role {
        TokenRole::Agent => bootstrap::NODE_TOKEN_GROUP,
        TokenRole::Server => bootstrap::SERVER_TOKEN_GROUP,
    };
    data.insert("auth-extra-groups".into(), group.into());
    if !description.is_empty() {
        data.insert("description".into(), description.to_string());
    }
    if let Some(ttl) = ttl {
        let exp = jiff::Timestamp::now()
            + jiff::SignedDuration::from_secs(i64::try_from(ttl).unwrap_or(i64::MAX / 2));
        let exp = jiff::Timestamp::from_second(exp.as_second()).unwrap_or(exp);
        data.insert("expiration".into(), exp.to_string());
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(bearer.secret_name()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        type_: Some(bootstrap::SECRET_TYPE.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .context("cannot store the join token")?;
    Ok(JoinToken {
        ca_hash: crate::api::csr::hex(&Sha256::digest(ca_pem.as_bytes())),
        bearer,
    })
}

/// The CA bundle exactly as `GET /cacerts` serves it (what agents hash).
async fn fetch_ca(client: &kube::Client) -> anyhow::Result<String> {
    let req = http::Request::get("/cacerts")
        .body(Vec::new())
        .context("cannot build the /cacerts request")?;
    client
        .request_text(req)
        .await
        .context("cannot fetch the CA bundle from /cacerts")
}

/// `30s`, `15m`, `24h`, `7d`, `1h30m`; `0` means the token never expires.
pub fn parse_ttl(s: &str) -> anyhow::Result<Option<u64>> {
    if s == "0" {
        return Ok(None);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("invalid --ttl {s:?}: use a duration like 30m, 24h or 7d"),
        };
        let n: u64 = num.parse().map_err(|_| {
            anyhow::anyhow!("invalid --ttl {s:?}: use a duration like 30m, 24h or 7d")
        })?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        bail!("invalid --ttl {s:?}: use a duration like 30m, 24h or 7d");
    }
    Ok(Some(total))
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
