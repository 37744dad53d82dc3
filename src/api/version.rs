//! The Kubernetes version Rampart speaks, in one place: the apiserver's `/version`, the
//! kubelet's `nodeInfo.kubeletVersion` and the probes' `User-Agent` all derive from it.

/// The Kubernetes release whose API we serve.
pub const KUBE_MINOR: &str = "37";

/// `kube-probe/1.37`'s version part.
pub const MAJOR_MINOR: &str = "1.37";

/// The version in Kubernetes form (`v1.37.0+rampart.<crate version>`), as `/version`'s
/// `gitVersion` and the node's `kubeletVersion` show it.
pub fn git_version() -> String {
    format!("v1.{KUBE_MINOR}.0+rampart.{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms_agree() {
        assert_eq!(super::MAJOR_MINOR, format!("1.{}", super::KUBE_MINOR));
        assert!(super::git_version().starts_with("v1.37.0+rampart."));
    }
}
