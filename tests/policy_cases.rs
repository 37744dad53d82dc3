//! The policy author's tools and `--policy-dir`: `rampart policy test` runs the table-driven
//! cases in `policies/tests/` (and fails on a wrong one), `rampart policy check` reports
//! `file:line`, and the server refuses a policy directory that does not validate but applies a
//! valid extra `authz/` policy.

mod harness;

use std::path::{Path, PathBuf};

use harness::{rampart, Server};

fn case_files() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/tests");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("policies/tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    files
}

fn output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_system_policy_cases_pass() {
    let files = case_files();
    let mut args = vec!["policy", "test"];
    args.extend(files.iter().map(String::as_str));
    let o = rampart(&args);
    let text = output(&o);
    assert!(o.status.success(), "{text}");
    // Admission cases run through the admission engine and name the PSS policy.
    assert!(
        text.contains("PASS") && text.contains("pss/baseline/privileged"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.contains("PASS"), "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
}

#[test]
fn a_wrong_case_fails() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "cases:\n- name: plain users are not masters\n  principal: {user: bob, groups: [system:authenticated]}\n  verb: delete\n  resource: {resource: secrets, namespace: default, name: s}\n  expect: allow\n- name: right decision, wrong policy\n  principal: {user: admin, groups: [system:masters]}\n  verb: get\n  path: /healthz\n  expect: allow\n  expectPolicies: [system/discovery]\n",
    )
    .unwrap();
    let o = rampart(&["policy", "test", wrong.to_str().unwrap()]);
    let text = output(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("FAIL")
            && text.contains("plain users are not masters")
            && text.contains("expected allow"),
        "{text}"
    );
    assert!(
        text.contains("expected policies [system/discovery]"),
        "{text}"
    );
    // A typo in a field name is an error, not a silently different case.
    std::fs::write(
        &wrong,
        "cases:\n- name: t\n  principal: {user: bob}\n  verb: get\n  path: /\n  expect: deny\n  expectPolicy: []\n",
    )
    .unwrap();
    let o = rampart(&["policy", "test", wrong.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", output(&o));
}

#[test]
fn policy_check_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.cedar");
    std::fs::write(
        &good,
        "@id(\"t/a\")\npermit (principal == k8s::User::\"alice\", action == k8s::Action::\"get\", resource is k8s::Resource);\n@id(\"t/b\")\nforbid (principal, action, resource is k8s::NonResourceURL) when { resource.path == \"/metrics\" };\n",
    )
    .unwrap();
    let o = rampart(&["policy", "check", good.to_str().unwrap()]);
    let text = output(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("good.cedar: 2 policies OK"), "{text}");

    // Type error on line 3: `resource.namespaces` is not an attribute of Resource.
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "// a comment\npermit (principal, action, resource is k8s::Resource)\nwhen { resource.namespaces == \"x\" };\n",
    )
    .unwrap();
    let o = rampart(&[
        "policy",
        "check",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    let text = output(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("bad.cedar:3: "), "{text}");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).lines().count(),
        1,
        "one line per bad file: {text}"
    );
    // Syntax error.
    std::fs::write(
        &bad,
        "permit (principal, action, resource)\nwhen { true ;\n",
    )
    .unwrap();
    let o = rampart(&["policy", "check", bad.to_str().unwrap()]);
    let text = output(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("bad.cedar:2: "), "{text}");
}

fn policy_dir_with(file: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let authz = dir.path().join("authz");
    std::fs::create_dir_all(&authz).unwrap();
    std::fs::write(authz.join(file), text).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn server_refuses_an_invalid_policy_dir() {
    let (_keep, dir) = policy_dir_with(
        "broken.cedar",
        "@id(\"ops/broken\")\npermit (principal, action, resource is k8s::Resource)\nwhen { resource.nmae == \"x\" };\n",
    );
    let data = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["server", "--disable-agent", "--bind-address", "127.0.0.1"])
        .arg("--https-port")
        .arg(harness::free_port().to_string())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--policy-dir")
        .arg(&dir)
        .output()
        .expect("run rampart server");
    let text = output(&o);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("authz/broken.cedar:3"), "{text}");
}

#[test]
fn a_valid_authz_policy_in_policy_dir_takes_effect() {
    let (_keep, dir) = policy_dir_with(
        "alice.cedar",
        "@id(\"ops/alice-namespaces\")\npermit (principal == k8s::User::\"alice\", action in [k8s::Action::\"get\", k8s::Action::\"list\"], resource is k8s::Resource)\nwhen { resource.apiGroup == \"\" && resource.resource == \"namespaces\" };\n",
    );
    // The same policy passes `policy check` and its case passes `policy test --policy-dir`.
    let o = rampart(&[
        "policy",
        "check",
        dir.join("authz/alice.cedar").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", output(&o));
    let cases = dir.join("cases.yaml");
    std::fs::write(
        &cases,
        "cases:\n- name: alice lists namespaces\n  principal: {user: alice, groups: [system:authenticated]}\n  verb: list\n  resource: {resource: namespaces}\n  expect: allow\n  expectPolicies: [ops/alice-namespaces]\n",
    )
    .unwrap();
    let o = rampart(&[
        "policy",
        "test",
        "--policy-dir",
        dir.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", output(&o));

    let s = Server::start_with(&["--policy-dir", dir.to_str().unwrap()]);
    let kubeconfig = |cn: &str| {
        let (cert, key) = s.client_cert(cn, &[]);
        let d = s.data_dir();
        std::fs::write(d.join(format!("{cn}.crt")), cert).unwrap();
        std::fs::write(d.join(format!("{cn}.key")), key).unwrap();
        let kc = d.join(format!("{cn}.kubeconfig"));
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority: '{}'}}}}]\nusers: [{{name: u, user: {{client-certificate: '{}', client-key: '{}'}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
                s.port,
                d.join("pki/ca-bundle.crt").display(),
                d.join(format!("{cn}.crt")).display(),
                d.join(format!("{cn}.key")).display()
            ),
        )
        .unwrap();
        kc.display().to_string()
    };
    let alice = kubeconfig("alice");
    let out = s.ok(&["--kubeconfig", &alice, "get", "namespaces", "-o", "name"]);
    assert!(out.contains("namespace/default"), "{out}");
    let bob = kubeconfig("bob");
    let err = s.fails(&["--kubeconfig", &bob, "get", "namespaces"]);
    assert!(
        err.contains("User \"bob\" cannot list resource \"namespaces\""),
        "{err}"
    );
    // Alice may list namespaces, nothing more.
    let err = s.fails(&["--kubeconfig", &alice, "get", "pods", "-n", "default"]);
    assert!(err.contains("forbidden"), "{err}");
}

#[test]
fn policy_check_kind_picks_the_schema_the_server_uses() {
    // An admission rule (over the object being written) is meaningless as an authorization
    // policy: authorization requests never carry admission types, so the authorization schema
    // does not know them and the check refuses it — by `--kind`, or by an `authz/` path.
    let dir = tempfile::tempdir().unwrap();
    let text = "@id(\"t/no-latest\")\nforbid (principal, action, resource is k8s::admission::Pod)\nwhen { resource.images.contains(\"busybox:latest\") };\n";
    let file = dir.path().join("rule.cedar");
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();

    let o = rampart(&["policy", "check", "--kind", "admission", path]);
    assert!(o.status.success(), "{}", output(&o));
    assert!(
        output(&o).contains("rule.cedar: 1 policies OK"),
        "{}",
        output(&o)
    );

    let o = rampart(&["policy", "check", "--kind", "authz", path]);
    let text_out = output(&o);
    assert_eq!(o.status.code(), Some(1), "{text_out}");
    assert!(text_out.contains("rule.cedar:2: "), "{text_out}");
    assert!(text_out.contains("k8s::admission::Pod"), "{text_out}");

    // Without --kind the directory decides, as the server's policy tree does.
    std::fs::create_dir_all(dir.path().join("authz")).unwrap();
    std::fs::create_dir_all(dir.path().join("admission")).unwrap();
    let in_authz = dir.path().join("authz/rule.cedar");
    let in_admission = dir.path().join("admission/rule.cedar");
    std::fs::write(&in_authz, text).unwrap();
    std::fs::write(&in_admission, text).unwrap();
    let o = rampart(&["policy", "check", in_authz.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", output(&o));
    let o = rampart(&["policy", "check", in_admission.to_str().unwrap()]);
    assert!(o.status.success(), "{}", output(&o));

    // And the server refuses the same file in its authz/ directory, naming it.
    let (_keep, policy_dir) = policy_dir_with("rule.cedar", text);
    let data = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["server", "--disable-agent", "--bind-address", "127.0.0.1"])
        .arg("--https-port")
        .arg(harness::free_port().to_string())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--policy-dir")
        .arg(&policy_dir)
        .output()
        .expect("run rampart server");
    assert!(!o.status.success(), "{}", output(&o));
    assert!(output(&o).contains("authz/rule.cedar:2"), "{}", output(&o));
}
