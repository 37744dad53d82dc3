//! The default seccomp profile (`RuntimeDefault`), compiled to BPF with `seccompiler` and
//! installed with `seccomp(2)` ourselves (seccompiler's `apply_filter` would always set
//! `no_new_privs`, which only `allowPrivilegeEscalation: false` may ask for).
//!
//! A deny list returning `EPERM` for what Docker's/containerd's default profile refuses to
//! an unprivileged container (kernel modules, kexec, mount, namespaces, keyrings, BPF, perf,
//! ptrace-like process access, clock and swap changes, reboot...), plus `socket(AF_ALG, ...)`
//! (CVE-2026-31431 uses the kernel crypto API; containerd's profile allows it) and `clone3`
//! answered with `ENOSYS` so libcs fall back to `clone`, whose namespace flags are checked.
//! Any failure to build or install the filter fails the container (fail closed).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
];

const NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

#[derive(Debug, thiserror::Error)]
#[error("seccomp: {0}")]
pub struct Error(String);

fn arch() -> Result<seccompiler::TargetArch, Error> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| Error(format!("unsupported architecture: {e:?}")))
}

fn backend(x: seccompiler::BackendError) -> Error {
    Error(x.to_string())
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, Error> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch()?,
    )
    .map_err(backend)?;
    filter.try_into().map_err(backend)
}

/// The default profile as two programs, installed in order: the deny list (`EPERM`) and
/// `clone3` → `ENOSYS` (its flags live in memory, so only `clone`'s can be checked).
pub fn default_programs() -> Result<Vec<BpfProgram>, Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in DENIED {
        rules.insert(*nr, Vec::new());
    }
    let cond =
        |idx, op, v| SeccompCondition::new(idx, SeccompCmpArgLen::Dword, op, v).map_err(backend);
    rules.insert(
        libc::SYS_socket,
        vec![
            SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, libc::AF_ALG as u64)?])
                .map_err(backend)?,
        ],
    );
    // Deny when any namespace flag is set: (flags & NS) != 0 ⇔ not MaskedEq(NS) == 0.
    let mut clone_rules = Vec::new();
    for bit in 0..64u32 {
        let flag = 1u64 << bit;
        if NS_FLAGS & flag != 0 {
            clone_rules.push(
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .map_err(backend)?])
                .map_err(backend)?,
            );
        }
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let main = compile(rules, libc::EPERM)?;
    let clone3 = compile(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        libc::ENOSYS,
    )?;
    Ok(vec![main, clone3])
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// Install a program on the calling thread. Needs `CAP_SYS_ADMIN` or `no_new_privs`.
pub fn install(prog: &BpfProgram) -> std::io::Result<()> {
    let len =
        u16::try_from(prog.len()).map_err(|_| std::io::Error::other("seccomp program too long"))?;
    let fprog = SockFprog {
        len,
        filter: prog.as_ptr(),
    };
    // SAFETY: seccomp(2) copies `fprog` and the program it points to, both alive here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn compiles() {
        let p = super::default_programs().expect("profile compiles");
        assert_eq!(p.len(), 2);
        assert!(p[0].len() > 50);
    }
}
