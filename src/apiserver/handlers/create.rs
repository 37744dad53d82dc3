//! POST to a collection: create an object (with `generateName`, `dryRun`, field validation).
//! A `dryRun=All` create runs every step but the write, and still answers 409 AlreadyExists for
//! a taken name (upstream's `DryRunnableStorage.Create`).

use http::Response;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::prepare::{self, meta};
use super::{read_body, Ctx};
use crate::apiserver::edge::body::{json_response, Body};
use crate::apiserver::status::{ApiError, ApiResult};
use crate::apiserver::{admission, storage, strategy};
use crate::auth::admission::Operation;

/// Upstream's `SimpleNameGenerator` alphabet: no vowels, no confusable characters.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generate_name(base: &str) -> String {
    let base: String = base.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rand::random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

pub async fn create(ctx: &mut Ctx, body: Incoming) -> ApiResult<Response<Body>> {
    let (_, mut obj) = read_body(ctx, body).await?;
    if ctx.ri.group == "authentication.k8s.io" && ctx.ri.kind == "SelfSubjectReview" {
        // `kubectl auth whoami`: echo the authenticated identity; nothing is stored.
        prepare::check_type(ctx, &mut obj)?;
        return Ok(json_response(
            201,
            &json!({
                "kind": "SelfSubjectReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": prepare::now_rfc3339()},
                "status": {"userInfo": user_info(&ctx.user)},
            }),
        ));
    }
    if ctx.ri.group == "authorization.k8s.io"
        && crate::apiserver::endpoints::access_review::KINDS.contains(&ctx.ri.kind.as_str())
    {
        prepare::check_type(ctx, &mut obj)?;
        let reply = crate::apiserver::endpoints::access_review::review(
            &ctx.state,
            &ctx.user,
            &ctx.ri,
            &ctx.info.namespace,
            obj,
        )?;
        return Ok(json_response(201, &reply));
    }
    let (obj, _) = create_object(ctx, obj).await?;
    Ok(json_response(201, &obj))
}

/// `authentication.k8s.io/v1` `UserInfo`: empty uid and extra are left out, as upstream.
fn user_info(user: &crate::auth::UserInfo) -> Value {
    let mut v = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        v["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        v["extra"] = json!(user.extra);
    }
    v
}

/// The create path shared with server-side apply of a new object. Returns the stored object
/// (or the would-be object under dryRun) and its revision.
pub async fn create_object(ctx: &mut Ctx, mut obj: Value) -> ApiResult<(Value, u64)> {
    prepare::check_type(ctx, &mut obj)?;
    prepare::place_in_namespace(ctx, &mut obj)?;
    if obj["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = if name.is_empty() {
        match obj["metadata"]["generateName"].as_str() {
            Some(base) if !base.is_empty() => generate_name(base),
            _ => {
                return Err(ApiError::invalid(
                    &ctx.ri,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "Required value: name or generateName is required".into(),
                    )],
                ))
            }
        }
    } else {
        name
    };
    meta(&mut obj).insert("name".into(), json!(name));
    ctx.seen.created_name = Some(name.clone());
    let mut obj = prepare::decode(ctx, obj)?;
    crate::apiserver::strategy::defaults::apply(&ctx.ri, &mut obj);
    prepare::stamp_create(ctx, &mut obj);
    strategy::prepare_create(ctx, &mut obj).await?;
    prepare::ensure_namespace(ctx, &name).await?;
    admission::mutate_create(ctx, &mut obj).await?;
    prepare::validate(ctx, &obj, None)?;
    let admitted = admission::validate(ctx, Operation::Create, &obj, None).await;
    let admitted = ctx.admitted(admitted)?;
    if ctx.dry_run() {
        // As upstream's DryRunnableStorage: a dry-run create answers what the real one would,
        // including 409 for a name already taken, and writes nothing.
        let existing = ctx
            .state
            .store
            .get(&ctx.key(&name), None)
            .await
            .map_err(|e| ApiError::from_store(e, &ctx.ri, &name))?;
        if existing.is_some() {
            return Err(ApiError::already_exists(&ctx.ri, &name));
        }
        return Ok((obj, 0));
    }
    // Claims (Service IPs and ports) only now, after validation and admission; dropping
    // `claims` on any error below gives them back.
    let claims = match strategy::begin_write(ctx, &mut obj, None).await {
        Ok(c) => c,
        Err(e) => {
            admission::create_failed(ctx, &admitted);
            return Err(e);
        }
    };
    let stored = match storage::encode(&obj) {
        Ok(bytes) => ctx
            .state
            .store
            .create(&ctx.key(&name), bytes)
            .await
            .map_err(|e| ApiError::from_store(e, &ctx.ri, &name)),
        Err(e) => Err(e),
    };
    let rev = match stored {
        Ok(rev) => rev,
        Err(e) => {
            admission::create_failed(ctx, &admitted);
            return Err(e);
        }
    };
    strategy::commit(claims).await;
    storage::set_resource_version(&mut obj, rev);
    strategy::after_commit(ctx, &obj).await;
    admission::after_change(ctx, true);
    Ok((obj, rev))
}
