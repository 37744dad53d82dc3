//! The nftables netlink encoder against the real kernel, each test in a fresh network
//! namespace of its own (`unshare(CLONE_NEWNET)` on the test's thread; nextest runs every test
//! in its own process, and the `nft` child the test spawns inherits the namespace).
//!
//! Rampart never calls `nft`; these tests use Debian's `nft -j list` only to read back and
//! assert what the encoder programmed (a netlink read-back decoder would be a second encoder
//! to trust). Needs root and `nft`; skips with the reason otherwise, fails instead when
//! `RAMPART_REQUIRE_PRIVILEGED=1`.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

use std::process::Command;

use rampart::netfilter::batch::{types, DATA_VERDICT, SET_MAP};
use rampart::netfilter::expr::ip4;
use rampart::netfilter::{Batch, ChainHook, Expr, Family, Reg, SetSpec, Socket, Verdict};

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces and nftables)".into());
    }
    if Command::new("nft").arg("--version").output().is_err() {
        return Some("needs Debian's nft to read back what was programmed".into());
    }
    None
}

/// Enter a fresh network namespace, or say why not (and fail under CI's requirement).
fn fresh_netns() -> bool {
    if let Some(why) = skip_reason() {
        assert!(
            std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "RAMPART_REQUIRE_PRIVILEGED=1 but: {why}"
        );
        eprintln!("skipped: {why}");
        return false;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    true
}

fn nft_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("nft")
        .arg("-j")
        .args(args)
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nft json")
}

fn nft_text(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const T: &str = "rampart-test";

fn service_map() -> SetSpec {
    SetSpec {
        name: "service-ips".into(),
        flags: SET_MAP,
        key_type: types::concat(&[types::IPV4_ADDR, types::INET_PROTO, types::INET_SERVICE]),
        key_len: 12,
        data_type: Some(DATA_VERDICT),
        timeout_ms: None,
    }
}

#[test]
fn a_batch_programs_table_chains_maps_and_rules_that_nft_reads_back() {
    if !fresh_netns() {
        return;
    }
    let sock = Socket::open().expect("netlink socket");
    assert_eq!(sock.get_table(Family::Ip, T).expect("get"), None);

    let mut b = Batch::new(Family::Ip);
    b.add_table(T);
    b.add_set(T, &service_map());
    b.add_chain(T, "services", None);
    b.add_chain(T, "svc-a", None);
    b.add_chain(T, "ep-a1", None);
    b.add_chain(T, "ep-a2", None);
    b.add_chain(
        T,
        "nat-output",
        Some(&ChainHook {
            kind: "nat",
            hook: 3,
            priority: -100,
        }),
    );
    b.add_rule(
        T,
        "nat-output",
        &[Expr::Verdict(Verdict::Jump("services".into()))],
    );
    let mut vmap = ip4::daddr_proto_port();
    vmap.push(Expr::Lookup {
        set: "service-ips".into(),
        set_id: None,
        sreg: Reg::r(0),
        dreg: Some(Reg::VERDICT),
        invert: false,
    });
    b.add_rule(T, "services", &vmap);
    b.add_rule_with_vmap(
        T,
        "svc-a",
        &[Expr::NumgenRandom {
            modulus: 2,
            dreg: Reg::r(0),
        }],
        Reg::r(0),
        types::INTEGER,
        4,
        &[
            (
                0u32.to_ne_bytes().to_vec(),
                Some(Verdict::Goto("ep-a1".into())),
            ),
            (
                1u32.to_ne_bytes().to_vec(),
                Some(Verdict::Goto("ep-a2".into())),
            ),
        ],
    );
    let mut ep = ip4::proto_is(ip4::TCP);
    ep.extend(ip4::dnat([10, 42, 0, 7].into(), 8080));
    b.add_rule(T, "ep-a1", &ep);
    b.add_rule(T, "ep-a2", &[Expr::Reject]);
    b.add_elements(
        T,
        "service-ips",
        &[(
            ip4::key_addr_proto_port([10, 43, 0, 1].into(), ip4::TCP, 80),
            Some(Verdict::Goto("svc-a".into())),
        )],
    );
    let n = b.len();
    sock.apply(&mut b).expect("apply");
    assert!(n >= 12, "every message counted: {n}");

    let text = nft_text(&["list", "table", "ip", T]);
    assert!(text.contains("type nat hook output priority"), "{text}");
    assert!(text.contains("jump services"), "{text}");
    assert!(
        text.contains("ip daddr . meta l4proto . th dport vmap @service-ips"),
        "{text}"
    );
    // The keys are host-order u32s, what numgen writes into the register (so the kernel
    // matches them); an anonymous map of plain integers carries no byte order for `nft` to
    // print them by, so on little-endian hosts it shows 1 as 16777216.
    assert!(
        text.contains("numgen random mod 2 vmap { 0 : goto ep-a1, 1 : goto ep-a2 }")
            || text.contains("numgen random mod 2 vmap { 0 : goto ep-a1, 16777216 : goto ep-a2 }"),
        "{text}"
    );
    assert!(
        text.contains("meta l4proto tcp dnat to 10.42.0.7:8080"),
        "{text}"
    );
    assert!(text.contains("10.43.0.1 . tcp . 80 : goto svc-a"), "{text}");
    let info = sock.get_table(Family::Ip, T).expect("get").expect("exists");

    // A refused message aborts the whole transaction and is named with its sequence number.
    let mut bad = Batch::new(Family::Ip);
    bad.add_chain(T, "would-be-new", None);
    bad.add_rule(
        T,
        "svc-a",
        &[Expr::Verdict(Verdict::Jump("no-such-chain".into()))],
    );
    let err = sock.apply(&mut bad).expect_err("jump to a missing chain");
    let msg = err.to_string();
    assert_eq!(err.errno(), Some(libc::ENOENT), "{msg}");
    assert!(msg.contains("add rule to svc-a"), "{msg}");
    let after = nft_text(&["list", "table", "ip", T]);
    assert!(
        !after.contains("would-be-new"),
        "nothing of the batch applied: {after}"
    );

    // Deleting and re-creating the table changes its handle: what recovery keys on.
    let mut del = Batch::new(Family::Ip);
    del.destroy_table(T);
    sock.apply(&mut del).expect("destroy");
    assert_eq!(sock.get_table(Family::Ip, T).expect("get"), None);
    let mut again = Batch::new(Family::Ip);
    again.add_table(T);
    sock.apply(&mut again).expect("recreate");
    let info2 = sock.get_table(Family::Ip, T).expect("get").expect("exists");
    assert_ne!(info.handle, info2.handle);
    let v = nft_json(&["list", "tables"]);
    assert!(v.to_string().contains(T));
}

#[test]
fn element_updates_and_chain_flushes_touch_only_what_they_name() {
    if !fresh_netns() {
        return;
    }
    let sock = Socket::open().expect("netlink socket");
    let mut b = Batch::new(Family::Ip);
    b.add_table(T);
    b.add_set(T, &service_map());
    for c in ["a", "b"] {
        b.add_chain(T, c, None);
        b.add_rule(T, c, &[Expr::Counter, Expr::Verdict(Verdict::Accept)]);
    }
    let k = |i: u8| ip4::key_addr_proto_port([10, 43, 0, i].into(), ip4::UDP, 53);
    b.add_elements(
        T,
        "service-ips",
        &(1..=200)
            .map(|i| (k(i), Some(Verdict::Goto("a".into()))))
            .collect::<Vec<_>>(),
    );
    sock.apply(&mut b).expect("apply");
    let handles = |chain: &str| -> Vec<u64> {
        let v = nft_json(&["-a", "list", "chain", "ip", T, chain]);
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["rule"]["handle"].as_u64())
            .collect()
    };
    let b_before = handles("b");
    let a_before = handles("a");

    let mut change = Batch::new(Family::Ip);
    change.del_elements(T, "service-ips", &[(k(7), None)]);
    change.add_elements(T, "service-ips", &[(k(7), Some(Verdict::Goto("b".into())))]);
    change.flush_chain(T, "a");
    change.add_rule(T, "a", &[Expr::Verdict(Verdict::Drop)]);
    assert_eq!(change.len(), 4);
    sock.apply(&mut change).expect("apply change");
    assert_eq!(handles("b"), b_before, "untouched chain keeps its rules");
    assert_ne!(handles("a"), a_before, "rewritten chain has new rules");
    let text = nft_text(&["list", "map", "ip", T, "service-ips"]);
    assert!(text.contains("10.43.0.7 . udp . 53 : goto b"), "{text}");
    assert!(text.contains("10.43.0.8 . udp . 53 : goto a"), "{text}");
    assert_eq!(text.matches(": goto").count(), 200, "{text}");
}
