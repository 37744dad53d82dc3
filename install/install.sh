#!/bin/sh
# Rampart installer: the `curl -sfL <mirror>/install.sh | sh -` target.
#
# Downloads the rampart binary with SHA256SUMS and SHA256SUMS.sig from a release mirror (made by
# tools/release.sh), verifies the Ed25519 signature with the pinned release key and the binary's
# checksum, and only then installs anything: the binary, a service for the init system
# (systemd unit or OpenRC script), rampart-killall.sh and rampart-uninstall.sh. Any failed check
# refuses the install and leaves the machine as it was. Re-running upgrades in place.
#
# Environment (k3s-like names):
#   INSTALL_RAMPART_MIRROR       base URL of the release mirror (https://, http://, file://)
#   INSTALL_RAMPART_VERSION      version to install (default: the mirror's `latest`)
#   INSTALL_RAMPART_BIN_DIR      where the binary and scripts go (default /usr/local/bin)
#   INSTALL_RAMPART_SYSTEMD_DIR  where the systemd unit goes (default /etc/systemd/system)
#   INSTALL_RAMPART_SKIP_START   "true": install but do not enable or start the service
#   INSTALL_RAMPART_PUBLIC_KEY   another Ed25519 public key (PEM text or a file) for a mirror that
#                                signs its own builds; the installer warns when it is used
#   INSTALL_RAMPART_EXEC         extra flags for `rampart server` / `rampart agent`
#   RAMPART_URL, RAMPART_TOKEN   both set: install an agent that joins that server
# Less common:
#   INSTALL_RAMPART_DATA_DIR     data directory root (default /var/lib/rampart)
#   INSTALL_RAMPART_CONFIG_DIR   configuration directory (default /etc/rampart)
#   INSTALL_RAMPART_INIT         auto (default) | systemd | openrc | none
#   INSTALL_RAMPART_OPENRC_DIR   where the OpenRC script goes (default /etc/init.d)
set -eu

# The project's release key (Ed25519). Its private half never leaves the release owner.
RELEASE_PUBLIC_KEY='-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA+4AlHKeUwE9kWmr4iV7a0mQGe2PqWLAO4ZPzAVqO4gk=
-----END PUBLIC KEY-----'

info() { echo "[rampart] $*"; }
warn() { echo "[rampart] WARNING: $*" >&2; }
fatal() { echo "[rampart] ERROR: $*" >&2; exit 1; }

MIRROR="${INSTALL_RAMPART_MIRROR:-https://get.rampart.dev/releases}"
MIRROR="${MIRROR%/}"
VERSION="${INSTALL_RAMPART_VERSION:-latest}"
BIN_DIR="${INSTALL_RAMPART_BIN_DIR:-/usr/local/bin}"
SYSTEMD_DIR="${INSTALL_RAMPART_SYSTEMD_DIR:-/etc/systemd/system}"
OPENRC_DIR="${INSTALL_RAMPART_OPENRC_DIR:-/etc/init.d}"
DATA_DIR="${INSTALL_RAMPART_DATA_DIR:-/var/lib/rampart}"
CONFIG_DIR="${INSTALL_RAMPART_CONFIG_DIR:-/etc/rampart}"
SKIP_START="${INSTALL_RAMPART_SKIP_START:-false}"
EXEC_FLAGS="${INSTALL_RAMPART_EXEC:-}"
INIT="${INSTALL_RAMPART_INIT:-auto}"

# --- what to install ---------------------------------------------------------------------------
if [ -n "${RAMPART_URL:-}" ] || [ -n "${RAMPART_TOKEN:-}" ]; then
    [ -n "${RAMPART_URL:-}" ] || fatal "RAMPART_TOKEN is set but RAMPART_URL is not (both select agent mode)"
    [ -n "${RAMPART_TOKEN:-}" ] || fatal "RAMPART_URL is set but RAMPART_TOKEN is not (both select agent mode)"
    case "$RAMPART_URL" in
        https://*) ;;
        *) fatal "RAMPART_URL must be an https:// URL, got '$RAMPART_URL'" ;;
    esac
    MODE=agent
    SERVICE=rampart-agent
    ROLE_DATA_DIR="$DATA_DIR/agent"
else
    MODE=server
    SERVICE=rampart
    ROLE_DATA_DIR="$DATA_DIR/server"
fi

case "$INIT" in
    auto)
        # The init that booted this machine, not merely one that is installed: OpenRC writes
        # /run/openrc/softlevel at boot (openrc-run refuses to start services without it).
        if [ -d /run/systemd/system ]; then INIT=systemd
        elif [ -f /run/openrc/softlevel ] && { [ -x /sbin/openrc-run ] || command -v openrc-run >/dev/null 2>&1; }; then INIT=openrc
        elif [ -n "${INSTALL_RAMPART_SYSTEMD_DIR:-}" ]; then INIT=systemd-unit-only
        else INIT=none
        fi ;;
    systemd|openrc|none) ;;
    *) fatal "INSTALL_RAMPART_INIT must be auto, systemd, openrc or none, got '$INIT'" ;;
esac

[ "$(uname -s)" = Linux ] || fatal "Rampart runs on Linux only"
case "$(uname -m)" in
    x86_64|amd64) ARCH=amd64 ;;
    *) fatal "no release for architecture $(uname -m) (only amd64 is built)" ;;
esac

for tool in openssl sha256sum mktemp; do
    command -v "$tool" >/dev/null 2>&1 || fatal "'$tool' is required to verify the download"
done

TMP=$(mktemp -d)
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

# --- download ----------------------------------------------------------------------------------
fetch() { # URL DEST
    case "$1" in
        file://*)
            src="${1#file://}"
            [ -f "$src" ] || return 1
            cp "$src" "$2" ;;
        https://*|http://*)
            if command -v curl >/dev/null 2>&1; then
                curl -fsSL --retry 2 --proto '=https,http' -o "$2" "$1"
            elif command -v wget >/dev/null 2>&1; then
                wget -q -O "$2" "$1"
            else
                fatal "curl or wget is required to download from $MIRROR"
            fi ;;
        *) fatal "unsupported mirror URL '$1' (use https://, http:// or file://)" ;;
    esac
}

case "$MIRROR" in
    http://*) warn "mirror $MIRROR is plain HTTP: the signature still protects the binary" ;;
esac

if [ "$VERSION" = latest ]; then
    fetch "$MIRROR/latest" "$TMP/latest" || fatal "cannot read $MIRROR/latest"
    VERSION=$(head -n 1 "$TMP/latest" | tr -d ' \r\n')
fi
# The version becomes part of a URL and a path: accept only a plain version string.
if ! printf '%s' "$VERSION" | grep -Eq '^v[0-9][0-9A-Za-z.+-]*$'; then
    fatal "invalid version '$VERSION' (expected v1.2.3)"
fi

BASE="$MIRROR/$VERSION"
info "downloading rampart $VERSION ($MODE) from $MIRROR"
fetch "$BASE/rampart-linux-$ARCH" "$TMP/rampart" || fatal "cannot download $BASE/rampart-linux-$ARCH"
fetch "$BASE/SHA256SUMS" "$TMP/SHA256SUMS" || fatal "cannot download $BASE/SHA256SUMS"
fetch "$BASE/SHA256SUMS.sig" "$TMP/SHA256SUMS.sig" || fatal "cannot download $BASE/SHA256SUMS.sig"

# --- verify: signature first, then the checksum it vouches for -------------------------------
if [ -n "${INSTALL_RAMPART_PUBLIC_KEY:-}" ]; then
    case "$INSTALL_RAMPART_PUBLIC_KEY" in
        -----BEGIN*) printf '%s\n' "$INSTALL_RAMPART_PUBLIC_KEY" > "$TMP/release.pub" ;;
        *) [ -r "$INSTALL_RAMPART_PUBLIC_KEY" ] || fatal "INSTALL_RAMPART_PUBLIC_KEY: cannot read $INSTALL_RAMPART_PUBLIC_KEY"
           cp "$INSTALL_RAMPART_PUBLIC_KEY" "$TMP/release.pub" ;;
    esac
    warn "verifying with INSTALL_RAMPART_PUBLIC_KEY instead of the Rampart release key: trust that key's owner"
else
    printf '%s\n' "$RELEASE_PUBLIC_KEY" > "$TMP/release.pub"
fi
openssl pkey -pubin -in "$TMP/release.pub" -noout -text 2>/dev/null | grep -q '^ED25519 Public-Key' \
    || fatal "the public key is not an Ed25519 public key"
if ! openssl pkeyutl -verify -pubin -inkey "$TMP/release.pub" -rawin \
        -in "$TMP/SHA256SUMS" -sigfile "$TMP/SHA256SUMS.sig" >/dev/null 2>&1; then
    fatal "signature check FAILED for $BASE/SHA256SUMS (wrong key or tampered file): nothing installed"
fi
expected=$(awk -v f="rampart-linux-$ARCH" '$2 == f || $2 == "*" f { print $1; exit }' "$TMP/SHA256SUMS")
[ -n "$expected" ] || fatal "SHA256SUMS has no entry for rampart-linux-$ARCH: nothing installed"
actual=$(sha256sum "$TMP/rampart" | cut -d ' ' -f 1)
[ "$expected" = "$actual" ] || fatal "checksum MISMATCH for rampart-linux-$ARCH (expected $expected, got $actual): nothing installed"
chmod 0755 "$TMP/rampart"
"$TMP/rampart" version >/dev/null 2>&1 || fatal "the downloaded binary does not run on this machine: nothing installed"
info "signature and checksum verified"

# --- install -----------------------------------------------------------------------------------
mkdir -p "$BIN_DIR"
# Replace the binary by rename so a running rampart keeps its old inode (upgrade in place).
cp "$TMP/rampart" "$BIN_DIR/.rampart.new"
chmod 0755 "$BIN_DIR/.rampart.new"
mv -f "$BIN_DIR/.rampart.new" "$BIN_DIR/rampart"
info "installed $BIN_DIR/rampart ($VERSION)"

# Paths the helper scripts act on are fixed now, so uninstall removes what this install made.
write_script() { # NAME BODY-FUNCTION
    "$2" > "$BIN_DIR/.$1.new"
    chmod 0755 "$BIN_DIR/.$1.new"
    mv -f "$BIN_DIR/.$1.new" "$BIN_DIR/$1"
}

killall_script() {
    cat <<EOF
#!/bin/sh
# Stop every Rampart process and pod on this node and remove its network state.
# Written by install.sh; the binary's own subcommands do the netlink work where they exist.
set -u
[ "\$(id -u)" = 0 ] || { echo "rampart-killall.sh: run as root" >&2; exit 1; }
BIN="$BIN_DIR/rampart"
DATA_DIR="$DATA_DIR"
for svc in rampart rampart-agent; do
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl stop "\$svc" 2>/dev/null || true
    elif [ -x "$OPENRC_DIR/\$svc" ]; then
        "$OPENRC_DIR/\$svc" stop 2>/dev/null || true
    fi
done
# Every process running this binary: servers, agents and the per-pod shims (which hold the
# containers: their children die with the pod's PID namespace).
pids_of_binary() {
    for p in /proc/[0-9]*; do
        exe=\$(readlink "\$p/exe" 2>/dev/null) || continue
        case "\$exe" in "\$BIN"|"\$BIN (deleted)") echo "\${p#/proc/}" ;; esac
    done
}
for sig in TERM KILL; do
    pids=\$(pids_of_binary)
    [ -n "\$pids" ] || break
    kill -s \$sig \$pids 2>/dev/null || true
    [ \$sig = TERM ] && sleep 2
done
# Mounts under the data directory and the pod runtime directories, deepest first.
for root in "\$DATA_DIR" /run/rampart /var/lib/kubelet/pods; do
    awk -v r="\$root" '\$2 == r || index(\$2, r "/") == 1 { print \$2 }' /proc/self/mounts \\
        | sort -r | while read -r m; do umount -l "\$m" 2>/dev/null || true; done
done
# Network state: rampart's own cleanup when the binary offers it, else the usual tools.
if "\$BIN" help internal-cleanup-network >/dev/null 2>&1; then
    "\$BIN" internal-cleanup-network || true
else
    if command -v ip >/dev/null 2>&1; then
        for link in \$(ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", \$2); print \$2 }'); do
            case "\$link" in rampart*|rvxlan*) ip link delete "\$link" 2>/dev/null || true ;; esac
        done
        for ns in \$(ip netns list 2>/dev/null | awk '{ print \$1 }'); do
            case "\$ns" in rampart-*|cni-*) ip netns delete "\$ns" 2>/dev/null || true ;; esac
        done
    fi
    if command -v nft >/dev/null 2>&1; then
        nft list tables 2>/dev/null | while read -r _ family name; do
            case "\$name" in rampart*|kube-proxy) nft delete table "\$family" "\$name" 2>/dev/null || true ;; esac
        done
    fi
fi
# The pod cgroups this node made (v1 controllers and v2).
for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "\$cg" ] || continue
    find "\$cg" -depth -type d -exec rmdir {} \\; 2>/dev/null || true
done
exit 0
EOF
}

uninstall_script() {
    cat <<EOF
#!/bin/sh
# Remove Rampart from this node: stop everything (rampart-killall.sh), then delete the binary,
# services, data and configuration this install created. Written by install.sh.
set -u
[ "\$(id -u)" = 0 ] || { echo "rampart-uninstall.sh: run as root" >&2; exit 1; }
"$BIN_DIR/rampart-killall.sh" || true
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable rampart rampart-agent >/dev/null 2>&1 || true
fi
if command -v rc-update >/dev/null 2>&1; then
    rc-update delete rampart default >/dev/null 2>&1 || true
    rc-update delete rampart-agent default >/dev/null 2>&1 || true
fi
rm -f "$SYSTEMD_DIR/rampart.service" "$SYSTEMD_DIR/rampart.service.env" \\
      "$SYSTEMD_DIR/rampart-agent.service" "$SYSTEMD_DIR/rampart-agent.service.env" \\
      "$OPENRC_DIR/rampart" "$OPENRC_DIR/rampart-agent" \\
      /etc/conf.d/rampart.env /etc/conf.d/rampart-agent.env
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
rm -rf "$DATA_DIR" "$CONFIG_DIR" /run/rampart /var/log/pods /var/log/containers
rm -f "$BIN_DIR/rampart" "$BIN_DIR/rampart-killall.sh"
rm -f "\$0" "$BIN_DIR/rampart-uninstall.sh"
echo "rampart: uninstalled"
EOF
}

write_script rampart-killall.sh killall_script
write_script rampart-uninstall.sh uninstall_script

# --- service -----------------------------------------------------------------------------------
if [ "$MODE" = agent ]; then
    START_CMD="$BIN_DIR/rampart agent --data-dir $ROLE_DATA_DIR $EXEC_FLAGS"
    DESCRIPTION="Rampart Kubernetes agent"
else
    START_CMD="$BIN_DIR/rampart server --data-dir $ROLE_DATA_DIR $EXEC_FLAGS"
    DESCRIPTION="Rampart Kubernetes server"
fi
START_CMD=$(printf '%s' "$START_CMD" | sed 's/ *$//')

# The agent's join token goes into a root-only environment file, never into the unit (units are
# world-readable) or the process's argv (visible in /proc).
write_env_file() { # PATH
    umask 077
    : > "$1.new"
    chmod 0600 "$1.new"
    if [ "$MODE" = agent ]; then
        printf 'RAMPART_SERVER=%s\nRAMPART_TOKEN=%s\n' "$RAMPART_URL" "$RAMPART_TOKEN" >> "$1.new"
    fi
    mv -f "$1.new" "$1"
    umask 022
}

systemd_unit() {
    cat <<EOF
[Unit]
Description=$DESCRIPTION
Documentation=https://rampart.dev
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=exec
EnvironmentFile=-$SYSTEMD_DIR/$SERVICE.service.env
ExecStart=$START_CMD
# Pods are held by per-pod shims that must outlive a restart or upgrade of rampart itself.
KillMode=process
# rampart manages the pod cgroups below its own.
Delegate=yes
Restart=always
RestartSec=5s
TimeoutStartSec=0
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999
# Hardening a Kubernetes node tolerates: home directories are not the node's business, kernel
# modules are loaded by the operator, the service cannot gain a new personality or realtime.
ProtectHome=true
ProtectKernelModules=true
LockPersonality=true
RestrictRealtime=true
EOF
}

openrc_script() {
    cat <<EOF
#!/sbin/openrc-run
description="$DESCRIPTION"
command="${START_CMD%% *}"
command_args="${START_CMD#* }"
command_background=true
pidfile="/run/$SERVICE.pid"
output_log="/var/log/$SERVICE.log"
error_log="/var/log/$SERVICE.log"
# Pods are held by per-pod shims: stop only rampart itself, never its process group.
retry="SIGTERM/30"
supervisor=supervise-daemon
respawn_delay=5

depend() {
    after network-online firewall
    want cgroups
}

start_pre() {
    # Not rc_ulimit: dash's ulimit takes one limit per call, and a hard limit below ours must
    # lower the goal rather than fail the start.
    ulimit -n 1048576 2>/dev/null || ulimit -n "\$(ulimit -H -n)"
    ulimit -u unlimited 2>/dev/null || ulimit -u "\$(ulimit -H -u)"
    if [ -f /etc/conf.d/$SERVICE.env ]; then
        set -a; . /etc/conf.d/$SERVICE.env; set +a
    fi
}
EOF
}

case "$INIT" in
    systemd|systemd-unit-only)
        mkdir -p "$SYSTEMD_DIR"
        write_env_file "$SYSTEMD_DIR/$SERVICE.service.env"
        systemd_unit > "$SYSTEMD_DIR/.$SERVICE.service.new"
        chmod 0644 "$SYSTEMD_DIR/.$SERVICE.service.new"
        mv -f "$SYSTEMD_DIR/.$SERVICE.service.new" "$SYSTEMD_DIR/$SERVICE.service"
        info "wrote $SYSTEMD_DIR/$SERVICE.service"
        ;;
    openrc)
        mkdir -p "$OPENRC_DIR" /etc/conf.d
        write_env_file "/etc/conf.d/$SERVICE.env"
        openrc_script > "$OPENRC_DIR/.$SERVICE.new"
        chmod 0755 "$OPENRC_DIR/.$SERVICE.new"
        mv -f "$OPENRC_DIR/.$SERVICE.new" "$OPENRC_DIR/$SERVICE"
        info "wrote $OPENRC_DIR/$SERVICE"
        ;;
esac

if [ "$SKIP_START" = true ]; then
    info "INSTALL_RAMPART_SKIP_START=true: not starting $SERVICE"
    exit 0
fi

case "$INIT" in
    systemd)
        systemctl daemon-reload
        systemctl enable "$SERVICE" >/dev/null
        # restart, not start: re-running the installer is how an upgrade is applied.
        systemctl restart "$SERVICE"
        info "$SERVICE started (systemctl status $SERVICE)"
        ;;
    openrc)
        rc-update add "$SERVICE" default >/dev/null
        "$OPENRC_DIR/$SERVICE" restart
        info "$SERVICE started (rc-service $SERVICE status)"
        ;;
    *)
        info "no systemd or OpenRC here: start it yourself, for example:"
        if [ "$MODE" = agent ]; then
            info "  RAMPART_SERVER=... RAMPART_TOKEN=... $START_CMD"
        else
            info "  $START_CMD"
        fi
        ;;
esac
exit 0
