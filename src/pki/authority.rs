//! The live cluster PKI: loads `DATA_DIR/pki`, repairs or renews whatever is missing, stale or
//! no longer chains to the current root, and hands out the current material to the TLS layer
//! and the CSR signer. Renewal, `cert rotate` and `rotate-ca` all go through [`Authority`],
//! which bumps a generation number that listeners (TLS, kubeconfig writer) watch.
//!
//! Invariants:
//! - Loading is convergent: whatever state a crash left the files in, [`Authority::open`]
//!   reaches a consistent set (a promoted `ca-next.*`, intermediates under the current root,
//!   leaves under the current intermediates) without human help.
//! - A leaf is reissued at 2/3 of its lifetime, when its issuer changed, when its lifetime
//!   exceeds the configured one, or when the serving names changed.
//! - During a CA rotation the old root stays a trust anchor and the new root is also presented
//!   cross-signed by the old one, so peers that only know the old root keep working.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, PublicKeyData};

use super::files::{ensure_private_dir, read_optional, read_private_key, write_atomic};
use super::inventory::{parse_all_pem, parse_pem, CertInfo};
use super::issue::{self, pem_blocks, Ca, LeafSpec, ServingNames, IN_CLUSTER_NAMES};
use super::profiles::{self, Profiles};
use super::{ClientIdentity, Error};

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATA_DIR/pki`.
    pub dir: PathBuf,
    /// DNS names and IPs the serving certificate must cover (beyond the built-in
    /// `kubernetes.default.svc...` names, localhost and loopback).
    pub serving: ServingNames,
    /// Lifetime of leaf certificates (7 days by default).
    pub leaf_validity: Duration,
}

/// A leaf certificate the server holds: its chain (leaf first) and key.
#[derive(Clone)]
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
    pub info: CertInfo,
}

/// One consistent generation of the PKI.
pub struct Material {
    pub generation: u64,
    root: Ca,
    root_info: CertInfo,
    /// Trust anchors: the current root and, during a rotation, the retiring one.
    pub bundle_pem: String,
    cross_pem: Option<String>,
    intermediates: BTreeMap<String, Ca>,
    /// Certificates of every signing CA peers may chain to (current and retiring), for
    /// completing client chains that omit their intermediate.
    pub intermediates_pem: String,
    /// The CAs whose certificates are client identities: the client-issuing signing CAs and,
    /// during a CA rotation, their retiring predecessors (never the root, the server CA or
    /// the kubelet-serving CA: those keys must not be able to mint a user).
    pub client_issuers_pem: String,
    pub leaves: BTreeMap<String, Leaf>,
    /// Service-account token signing key (PKCS#8 PEM) and the public keys that verify tokens.
    pub sa_key_pem: String,
    pub sa_public_pems: Vec<String>,
}

impl Material {
    pub fn leaf(&self, name: &str) -> Option<&Leaf> {
        self.leaves.get(name)
    }

    pub fn identity(&self, name: &str) -> Option<ClientIdentity> {
        self.leaves.get(name).map(|l| ClientIdentity {
            cert_pem: l.chain_pem.clone(),
            key_pem: l.key_pem.clone(),
        })
    }

    /// Whether a CA rotation is in its overlap phase.
    pub fn rotating(&self) -> bool {
        self.cross_pem.is_some()
    }

    /// Subject (raw DER) of the CA that currently signs certificates for `signer`'s authority.
    pub fn authority_subject(&self, authority: &str) -> Option<Vec<u8>> {
        let ca = self.intermediates.get(authority)?;
        parse_pem(&ca.cert_pem).ok().map(|i| i.subject_raw)
    }

    /// The certificate (PEM) of the signing CA `authority` (e.g. `kubelet-serving-ca`, the
    /// only anchor the apiserver trusts for kubelets).
    pub fn authority_cert_pem(&self, authority: &str) -> Option<String> {
        self.intermediates
            .get(authority)
            .map(|ca| ca.own_cert_pem())
    }

    /// Certificates appended after a leaf signed by `ca`.
    fn chain_after(&self, ca: &Ca) -> String {
        chain_after(ca, self.cross_pem.as_deref(), &self.root)
    }
}

fn chain_after(ca: &Ca, cross: Option<&str>, root: &Ca) -> String {
    let mut out = ca.own_cert_pem();
    if let Some(x) = cross {
        out.push_str(x);
    }
    // A CA brought by the user may sit under the user's own root: ship the chain up to (not
    // including) the anchor.
    let blocks = pem_blocks(&root.cert_pem);
    if blocks.len() > 1 {
        for b in &blocks[..blocks.len() - 1] {
            out.push_str(b);
        }
    }
    out
}

pub struct Authority {
    cfg: Config,
    profiles: Profiles,
    material: RwLock<Arc<Material>>,
    changes: tokio::sync::watch::Sender<u64>,
    /// Serialises every change to the files.
    write: Mutex<()>,
}

impl std::fmt::Debug for Authority {
    // Key material never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("dir", &self.cfg.dir)
            .finish_non_exhaustive()
    }
}

/// Which leaves to reissue regardless of their state.
enum Force<'a> {
    None,
    Leaves(&'a [String]),
    All,
}

impl Authority {
    /// Load the PKI from `cfg.dir`, creating, repairing or renewing whatever needs it.
    pub fn open(cfg: Config) -> Result<Arc<Authority>, Error> {
        let profiles = profiles::builtin().map_err(Error::Profiles)?;
        ensure_private_dir(&cfg.dir)?;
        let (material, _) = converge(&cfg, &profiles, 1, Force::None)?;
        let (changes, _) = tokio::sync::watch::channel(1);
        Ok(Arc::new(Authority {
            cfg,
            profiles,
            material: RwLock::new(Arc::new(material)),
            changes,
            write: Mutex::new(()),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    pub fn leaf_validity(&self) -> Duration {
        self.cfg.leaf_validity
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Material> {
        match self.material.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Notified with the generation number after every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn apply(&self, force: Force<'_>) -> Result<Vec<String>, Error> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.current().generation + 1;
        let (material, changed) = converge(&self.cfg, &self.profiles, next, force)?;
        if !changed.is_empty() {
            let generation = material.generation;
            match self.material.write() {
                Ok(mut m) => *m = Arc::new(material),
                Err(p) => *p.into_inner() = Arc::new(material),
            }
            self.changes.send_replace(generation);
        }
        Ok(changed)
    }

    /// Reissue whatever reached its renewal point; the names reissued.
    pub fn renew_due(&self) -> Result<Vec<String>, Error> {
        self.apply(Force::None)
    }

    /// Reissue the named leaves now (all of them when `names` is empty).
    pub fn rotate(&self, names: &[String]) -> Result<Vec<String>, Error> {
        for n in names {
            if !self.profiles.leaves.iter().any(|l| &l.name == n) {
                return Err(Error::UnknownService(n.clone()));
            }
        }
        if names.is_empty() {
            self.apply(Force::All)
        } else {
            self.apply(Force::Leaves(names))
        }
    }

    /// Start a CA rotation: a new root (cross-signed by the old one), new signing CAs and
    /// new leaves; the old root stays trusted until [`Authority::finish_ca_rotation`].
    pub fn begin_ca_rotation(&self) -> Result<Vec<String>, Error> {
        let dir = &self.cfg.dir;
        {
            let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
            if dir.join(RETIRING).exists() {
                return Err(Error::RotationInProgress);
            }
            let m = self.current();
            let old_anchor = pem_blocks(&m.root.cert_pem).pop().unwrap_or_default();
            let (root, cross) = issue::new_root(Some(&m.root))?;
            let mut retiring_ints = String::new();
            for ca in m.intermediates.values() {
                retiring_ints.push_str(&ca.own_cert_pem());
            }
            // Order matters for crash safety: the old trust is recorded first, the new root
            // is complete under its staging name before it is promoted (see `promote_next`).
            write_atomic(
                &dir.join(RETIRING_INTERMEDIATES),
                retiring_ints.as_bytes(),
                0o644,
            )?;
            write_atomic(&dir.join(RETIRING), old_anchor.as_bytes(), 0o644)?;
            write_atomic(
                &dir.join(CROSS),
                cross.unwrap_or_default().as_bytes(),
                0o644,
            )?;
            write_atomic(
                &dir.join("ca-next.key"),
                root.key.serialize_pem().as_bytes(),
                0o600,
            )?;
            write_atomic(&dir.join("ca-next.crt"), root.cert_pem.as_bytes(), 0o644)?;
            promote_next(dir)?;
        }
        self.apply(Force::All)
    }

    /// End a CA rotation: the old root and its signing CAs are no longer trusted.
    pub fn finish_ca_rotation(&self) -> Result<Vec<String>, Error> {
        {
            let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
            let dir = &self.cfg.dir;
            if !dir.join(RETIRING).exists() {
                return Err(Error::NoRotation);
            }
            // The cross-certificate goes first: a crash after it leaves an ordinary state
            // with an extra trusted root, which the next finish removes.
            for f in [CROSS, RETIRING_INTERMEDIATES, RETIRING] {
                remove(&dir.join(f))?;
            }
        }
        self.apply(Force::All)
    }

    /// Sign a CSR's certificate for a built-in signer; returns the chain PEM (leaf first).
    /// The lifetime is capped at the configured leaf validity.
    pub fn sign(
        &self,
        signer_name: &str,
        params: &mut CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<String, Error> {
        let authority = self
            .profiles
            .signers
            .get(signer_name)
            .ok_or_else(|| Error::UnknownSigner(signer_name.to_string()))?;
        let m = self.current();
        let ca = m
            .intermediates
            .get(authority)
            .ok_or_else(|| Error::UnknownSigner(signer_name.to_string()))?;
        let cap = time::OffsetDateTime::now_utc() + self.cfg.leaf_validity;
        if params.not_after > cap {
            params.not_after = cap;
        }
        let mut serial: [u8; 16] = rand::random();
        serial[0] = (serial[0] & 0x7f) | 0x01;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let leaf = issue::sign(params, public_key, ca)?;
        Ok(leaf + &m.chain_after(ca))
    }

    /// Every certificate the server holds, by file name, for checks and metrics.
    pub fn inventory(&self) -> Vec<(String, CertInfo)> {
        let m = self.current();
        let mut out = vec![("ca".to_string(), m.root_info.clone())];
        for (name, ca) in &m.intermediates {
            if let Ok(i) = parse_pem(&ca.cert_pem) {
                out.push((name.clone(), i));
            }
        }
        for (name, leaf) in &m.leaves {
            out.push((name.clone(), leaf.info.clone()));
        }
        out
    }
}

const RETIRING: &str = "retiring-ca.crt";
const RETIRING_INTERMEDIATES: &str = "retiring-intermediates.crt";
const CROSS: &str = "ca-cross.crt";

fn remove(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Finish promoting a staged root (`ca-next.*` → `ca.*`), key first. Safe to repeat.
fn promote_next(dir: &Path) -> Result<(), Error> {
    let rename = |from: &str, to: &str| {
        std::fs::rename(dir.join(from), dir.join(to)).map_err(|source| Error::Io {
            action: "rename",
            path: dir.join(from),
            source,
        })
    };
    let (next_key, next_crt) = (dir.join("ca-next.key"), dir.join("ca-next.crt"));
    if next_crt.exists() {
        if next_key.exists() {
            rename("ca-next.key", "ca.key")?;
        }
        rename("ca-next.crt", "ca.crt")?;
    } else if next_key.exists() {
        // The certificate was never written: the staged key belongs to nothing.
        remove(&next_key)?;
    }
    Ok(())
}

fn bad(path: &Path, what: &'static str, detail: impl std::fmt::Display) -> Error {
    Error::BadPem {
        path: path.to_path_buf(),
        what,
        detail: detail.to_string(),
    }
}

fn load_ca(dir: &Path, name: &str) -> Result<Option<(Ca, CertInfo)>, Error> {
    let (cp, kp) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let (Some(cert_pem), Some(key_pem)) = (read_optional(&cp)?, read_private_key(&kp)?) else {
        return Ok(None);
    };
    let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(&kp, "private key", e))?;
    let info = parse_pem(&cert_pem).map_err(|e| bad(&cp, "certificate", e))?;
    if info.public_key != key.public_key_raw() {
        return Err(bad(
            &cp,
            "certificate",
            format!("does not match the key in {}", kp.display()),
        ));
    }
    if !info.is_ca {
        return Err(bad(&cp, "CA certificate", "it is not a CA certificate"));
    }
    Ok(Some((Ca { cert_pem, key }, info)))
}

fn store_ca(dir: &Path, name: &str, ca: &Ca) -> Result<(), Error> {
    // Key first: a certificate without its key is useless, the reverse is re-creatable.
    write_atomic(
        &dir.join(format!("{name}.key")),
        ca.key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(
        &dir.join(format!("{name}.crt")),
        ca.cert_pem.as_bytes(),
        0o644,
    )
}

fn serving_spec(cfg: &Config, common_name: &str) -> LeafSpec {
    let mut dns: Vec<String> = IN_CLUSTER_NAMES.iter().map(|s| s.to_string()).collect();
    dns.extend(cfg.serving.dns.iter().cloned());
    let mut ips: Vec<std::net::IpAddr> =
        vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    ips.extend(cfg.serving.ips.iter().copied());
    dns.dedup();
    ips.dedup();
    LeafSpec {
        common_name: common_name.to_string(),
        organizations: Vec::new(),
        usage: profiles::Usage::Server,
        dns,
        ips,
    }
}

/// The certificates of the client-issuing CAs: the current ones, and the retiring ones of a CA
/// rotation (recognised by their subject: signing CAs are named `<common_name>-<generation>`,
/// see `issue::new_intermediate`).
fn client_issuers(profiles: &Profiles, current: &BTreeMap<String, Ca>, retiring: &str) -> String {
    let mut out = String::new();
    for a in profiles.client_authorities() {
        if let Some(ca) = current.get(&a.name) {
            out.push_str(&ca.own_cert_pem());
        }
        let prefix = format!("CN={}-", a.common_name);
        for block in pem_blocks(retiring) {
            if parse_pem(&block).is_ok_and(|i| i.subject.contains(&prefix)) {
                out.push_str(&block);
            }
        }
    }
    out
}

fn names_cover(info: &CertInfo, spec: &LeafSpec) -> bool {
    spec.dns.iter().all(|d| info.dns.contains(d)) && spec.ips.iter().all(|i| info.ips.contains(i))
}

/// Bring the files in `cfg.dir` to a consistent, current state; returns the material and the
/// names of everything (re)written.
fn converge(
    cfg: &Config,
    profiles: &Profiles,
    generation: u64,
    force: Force<'_>,
) -> Result<(Material, Vec<String>), Error> {
    let dir = &cfg.dir;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut changed = Vec::new();
    promote_next(dir)?;

    let (root, root_info) = match load_ca(dir, "ca")? {
        Some(x) => x,
        None => {
            if dir.join("ca.crt").exists() || dir.join("ca.key").exists() {
                return Err(Error::HalfPair(dir.join("ca.crt"), dir.join("ca.key")));
            }
            let (root, _) = issue::new_root(None)?;
            store_ca(dir, "ca", &root)?;
            changed.push("ca".to_string());
            let info = parse_pem(&root.cert_pem)
                .map_err(|e| bad(&dir.join("ca.crt"), "certificate", e))?;
            (root, info)
        }
    };

    let mut bundle = pem_blocks(&root.cert_pem).pop().unwrap_or_default();
    let retiring = read_optional(&dir.join(RETIRING))?.unwrap_or_default();
    bundle.push_str(&retiring);
    let bundle_path = dir.join("ca-bundle.crt");
    if read_optional(&bundle_path)?.as_deref() != Some(bundle.as_str()) {
        write_atomic(&bundle_path, bundle.as_bytes(), 0o644)?;
    }
    let cross_pem = read_optional(&dir.join(CROSS))?.filter(|s| !s.trim().is_empty());

    let mut intermediates = BTreeMap::new();
    let retiring_intermediates =
        read_optional(&dir.join(RETIRING_INTERMEDIATES))?.unwrap_or_default();
    let mut intermediates_pem = retiring_intermediates.clone();
    for a in &profiles.authorities {
        let current = load_ca(dir, &a.name)?.filter(|(_, info)| {
            info.issuer_raw == root_info.subject_raw && !info.due_for_renewal(now)
        });
        let ca = match current {
            Some((ca, _)) => ca,
            None => {
                let ca = issue::new_intermediate(&a.common_name, &root)?;
                store_ca(dir, &a.name, &ca)?;
                changed.push(a.name.clone());
                ca
            }
        };
        intermediates_pem.push_str(&ca.own_cert_pem());
        intermediates.insert(a.name.clone(), ca);
    }

    let client_issuers_pem = client_issuers(profiles, &intermediates, &retiring_intermediates);

    let mut leaves = BTreeMap::new();
    for l in &profiles.leaves {
        let Some(ca) = intermediates.get(&l.issuer) else {
            continue;
        };
        let ca_subject = parse_pem(&ca.cert_pem)
            .map(|i| i.subject_raw)
            .unwrap_or_default();
        let spec = if l.serving_names {
            serving_spec(cfg, &l.common_name)
        } else {
            LeafSpec {
                common_name: l.common_name.clone(),
                organizations: l.organizations.clone(),
                usage: l.usage,
                dns: Vec::new(),
                ips: Vec::new(),
            }
        };
        let forced = match &force {
            Force::None => false,
            Force::All => true,
            Force::Leaves(names) => names.contains(&l.name),
        };
        let (cp, kp) = (
            dir.join(format!("{}.crt", l.name)),
            dir.join(format!("{}.key", l.name)),
        );
        let existing = match (read_optional(&cp)?, read_private_key(&kp)?) {
            (Some(chain_pem), Some(key_pem)) if !forced => parse_pem(&chain_pem)
                .ok()
                .filter(|info| {
                    info.issuer_raw == ca_subject
                        && !info.due_for_renewal(now)
                        && info.lifetime() <= cfg.leaf_validity.as_secs() as i64 + 600
                        && (!l.serving_names || names_cover(info, &spec))
                        && chain_pem.contains(cross_pem.as_deref().unwrap_or(""))
                })
                .map(|info| Leaf {
                    chain_pem,
                    key_pem,
                    info,
                }),
            _ => None,
        };
        let leaf = match existing {
            Some(leaf) => leaf,
            None => {
                let (cert, key_pem) = issue::new_leaf(&spec, ca, cfg.leaf_validity)?;
                let chain_pem = cert + &chain_after(ca, cross_pem.as_deref(), &root);
                write_atomic(&kp, key_pem.as_bytes(), 0o600)?;
                write_atomic(&cp, chain_pem.as_bytes(), 0o644)?;
                changed.push(l.name.clone());
                let info = parse_pem(&chain_pem).map_err(|e| bad(&cp, "certificate", e))?;
                Leaf {
                    chain_pem,
                    key_pem,
                    info,
                }
            }
        };
        leaves.insert(l.name.clone(), leaf);
    }

    let (sa_key_pem, sa_pub) = match (
        read_private_key(&dir.join("sa.key"))?,
        read_optional(&dir.join("sa.pub"))?,
    ) {
        (Some(k), Some(p)) => (k, p),
        _ => {
            let (k, p) = issue::new_key_pem()?;
            write_atomic(&dir.join("sa.key"), k.as_bytes(), 0o600)?;
            write_atomic(&dir.join("sa.pub"), p.as_bytes(), 0o644)?;
            changed.push("sa".to_string());
            (k, p)
        }
    };
    KeyPair::from_pem(&sa_key_pem).map_err(|e| bad(&dir.join("sa.key"), "private key", e))?;

    // Fail loudly on anything in the bundle that is not a certificate.
    parse_all_pem(&bundle).map_err(|e| bad(&bundle_path, "certificate bundle", e))?;
    Ok((
        Material {
            generation,
            root,
            root_info,
            bundle_pem: bundle,
            cross_pem,
            intermediates,
            intermediates_pem,
            client_issuers_pem,
            leaves,
            sa_key_pem,
            sa_public_pems: vec![sa_pub],
        },
        changed,
    ))
}
