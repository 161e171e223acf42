#!/usr/bin/env bash
# Checks the images: hadolint on both Dockerfiles, then for each OCI archive that
# scripts/build-images.sh wrote under $CARGO_TARGET_DIR/images/:
#   - its config (skopeo): User 65532:65532, Entrypoint the binary, the OCI labels;
#   - its files: the static binary (root-owned, read-only, no set-id bit) and the CA bundle at
#     /etc/ssl/certs/ca-certificates.crt, and nothing else (no shell, no libc);
#   - its size: below 40 MiB unpacked;
#   - runs with podman (runc, --network none, --read-only, no --user): the process is uid and
#     gid 65532 (read from /proc once runc has set it up, just before it executes the binary),
#     `--help` exits 0; the operator's default command is `run`, and `crds` works;
#   - name resolution and TLS from inside the image, in a network namespace of the check's own
#     with only a loopback: a DNS server there resolves *.maos.test, and the operator's kube
#     client verifies a TLS server against the roots at /etc/ssl/certs/ca-certificates.crt.
# Prints one summary line per image; exits non-zero, saying what failed, on any failure.
# `--lint-only`: hadolint only (no archives needed, no root). Installs nothing:
# scripts/install-image-tools.sh does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

lint_only=false
case "${1:-}" in
  "") ;;
  --lint-only) lint_only=true ;;
  *) echo "usage: $0 [--lint-only]" >&2; exit 2 ;;
esac

CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
IMAGES_DIR="$TARGET_DIR/images"
HADOLINT="$TARGET_DIR/tools-venv/bin/hadolint"
MAX_MIB=40
UID_GID=65532

failures=()
fail() {
  echo "check-images: FAIL: $*" >&2
  failures+=("$*")
}
die() {
  echo "check-images: $*" >&2
  exit 1
}

[ -x "$HADOLINT" ] || die "no hadolint at $HADOLINT: run scripts/install-image-tools.sh first"
if ! $lint_only; then
  for command in skopeo podman runc file python3 openssl ip unshare nsenter setsid pgrep timeout; do
    command -v "$command" >/dev/null 2>&1 ||
      die "$command not found: run scripts/install-image-tools.sh first"
  done
  [ "$(id -u)" -eq 0 ] || die "needs root: podman runs the images as root's containers here"
fi

# 1. The Dockerfiles.
for dockerfile in operator/Dockerfile agent-runner/Dockerfile; do
  if "$HADOLINT" "$dockerfile"; then
    echo "check-images: hadolint $dockerfile: clean"
  else
    fail "hadolint found problems in $dockerfile (above)"
  fi
done
if $lint_only; then
  [ ${#failures[@]} -eq 0 ] || exit 1
  exit 0
fi

# podman's own storage and settings, apart from buildah's and from the user's home: a fresh store
# per run into which each archive is loaded, as a node would pull it.
mkdir -p "$IMAGES_DIR"
IMAGES_ABS="$(cd "$IMAGES_DIR" && pwd)"
CHECK_DIR="$IMAGES_ABS/check"
rm -rf "$CHECK_DIR"
mkdir -p "$CHECK_DIR"
export CONTAINERS_STORAGE_CONF="$CHECK_DIR/storage.conf"
export CONTAINERS_CONF="$CHECK_DIR/containers.conf"
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "vfs"
graphroot = "$CHECK_DIR/storage"
runroot = "$CHECK_DIR/runroot"
EOF
# crun fails here on setrlimit and cgroups: runc, and no default ulimits to set. No systemd or
# journald to talk to either.
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$CHECK_DIR/libpod"
EOF
PODMAN=(podman --runtime runc)
RUN_OPTS=(--read-only --log-driver k8s-file)

# What the labels must say: the workspace's version, license and repository.
{ read -r version && read -r license && read -r repository; } < <(
  "$CARGO" metadata --no-deps --format-version 1 --locked | python3 -c 'import json, sys
p = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "maos-operator")
print(p["version"], p["license"], p["repository"], sep="\n")')
[ -n "${repository:-}" ] || die "cannot read the workspace version, license and repository"

# The network namespace of step 2e: only a loopback, on which a DNS server answers every
# *.maos.test name with 127.0.0.1 and a TLS server holds a certificate for kube.maos.test from
# a CA made here (in no public bundle). Its processes form one process group, ended on exit.
NET_DIR="$CHECK_DIR/net"
NET_PGID=""
NETNS=""
stop_netns() {
  [ -z "$NET_PGID" ] || kill -- "-$NET_PGID" 2>/dev/null || true
}
trap stop_netns EXIT
start_netns() {
  mkdir -p "$NET_DIR"
  (
    cd "$NET_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=maos-check-ca \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube.maos.test -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:kube.maos.test\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -days 1 -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -extfile server.ext -out server.crt
  ) >"$NET_DIR/openssl.log" 2>&1 || { fail "openssl could not make the test CA: $(cat "$NET_DIR/openssl.log")"; return 1; }
  cat >"$NET_DIR/dns.py" <<'PY'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    query, peer = s.recvfrom(512)
    i, labels = 12, []
    while query[i]:
        labels.append(query[i + 1 : i + 1 + query[i]].decode())
        i += 1 + query[i]
    qtype = struct.unpack(">H", query[i + 1 : i + 3])[0]
    name = ".".join(labels)
    ours = name.endswith(".maos.test")
    print(name, qtype, flush=True)
    answer = b""
    if ours and qtype == 1:  # A: 127.0.0.1; AAAA and the rest: no data
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    header = struct.pack(">HHHHHH", query[0] << 8 | query[1], 0x8180 | (0 if ours else 3),
                         1, 1 if answer else 0, 0, 0)
    s.sendto(header + query[12 : i + 5] + answer, peer)
PY
  cat >"$NET_DIR/serve.sh" <<EOF
ip link set lo up
"$(command -v python3)" "$NET_DIR/dns.py" >"$NET_DIR/dns.log" 2>&1 &
openssl s_server -quiet -www -accept 127.0.0.1:8443 \\
  -cert "$NET_DIR/server.crt" -key "$NET_DIR/server.key" >"$NET_DIR/tls.log" 2>&1 &
wait
EOF
  echo "nameserver 127.0.0.1" >"$NET_DIR/resolv.conf"
  cat >"$NET_DIR/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters:
- name: check
  cluster:
    server: https://kube.maos.test:8443
users:
- name: check
  user:
    token: not-a-token
contexts:
- name: check
  context: {cluster: check, user: check}
current-context: check
EOF
  setsid unshare --net --fork bash "$NET_DIR/serve.sh" &
  local unshare_pid=$! inner="" pgid
  for _ in $(seq 50); do
    inner=$(pgrep -P "$unshare_pid" -x bash || true)
    if [ -n "$inner" ] && [ -z "$NET_PGID" ]; then
      # The servers' own process group (setsid's), never this script's.
      pgid=$(ps -o pgid= -p "$inner" | tr -d ' ')
      [ "$pgid" != "$(ps -o pgid= -p $$ | tr -d ' ')" ] && NET_PGID=$pgid
    fi
    if [ -n "$inner" ] && nsenter --net="/proc/$inner/ns/net" \
      bash -c 'exec 3<>/dev/tcp/127.0.0.1/8443' 2>/dev/null; then
      NETNS="/proc/$inner/ns/net"
      return 0
    fi
    sleep 0.2
  done
  fail "the DNS and TLS servers of the check's network namespace did not start: $(cat "$NET_DIR"/*.log 2>/dev/null)"
  return 1
}

# Reads an OCI archive (one image, one manifest) and prints `key=value` lines: its unpacked
# size, its files, the certificates in its CA bundle; extracts the binary named $2 to $3.
read_archive() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys, tarfile

archive, binary, out = sys.argv[1:]
with tarfile.open(archive) as outer:
    def blob(digest):
        return outer.extractfile("blobs/" + digest.replace(":", "/"))
    index = json.load(outer.extractfile("index.json"))
    manifest = json.load(blob(index["manifests"][0]["digest"]))
    unpacked, files, certificates = 0, [], 0
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=blob(layer["digest"]), mode="r:*") as tar:
            for m in tar:
                if m.isdir():
                    continue
                name = "/" + m.name.lstrip("./")
                unpacked += m.size
                kind = "file" if m.isfile() else "link" if (m.issym() or m.islnk()) else "other"
                files.append(f"{name}:{kind}:{m.uid}:{m.gid}:{m.mode & 0o7777:04o}")
                if not m.isfile():
                    continue
                if name == "/" + binary:
                    with open(out, "wb") as f:
                        f.write(tar.extractfile(m).read())
                elif name == "/etc/ssl/certs/ca-certificates.crt":
                    certificates = tar.extractfile(m).read().count(b"-----BEGIN CERTIFICATE-----")
print(f"unpacked_bytes={unpacked}")
print(f"certificates={certificates}")
print("files=" + " ".join(sorted(files)))
PY
}

# The image config (`skopeo inspect --config`) on stdin, as `key=value` lines into the
# associative array `config`: User, Entrypoint and Cmd (as JSON), label:NAME for each label.
declare -A config
read_config() {
  local key value
  config=()
  while IFS='=' read -r key value; do
    config[$key]=$value
  done < <(python3 -c 'import json, sys
c = json.load(sys.stdin).get("config", {})
for key in ("User", "Entrypoint", "Cmd"):
    value = c.get(key)
    print(f"{key}=" + (value if isinstance(value, str) else json.dumps(value)))
for name, value in (c.get("Labels") or {}).items():
    print(f"label:{name}=" + value.replace("\n", " "))')
}

# podman run: output (stdout and stderr) to $output, exit code to $run_exit; a minute at most.
run_image() {
  run_exit=0
  timeout 60 "${PODMAN[@]}" run --rm "${RUN_OPTS[@]}" "$@" >"$CHECK_DIR/run.out" 2>&1 || run_exit=$?
  output=$(cat "$CHECK_DIR/run.out")
}

summaries=()
# image name, binary, expected Cmd (JSON)
check_image() {
  local name=$1 binary=$2 cmd=$3
  local archive="$IMAGES_DIR/maos-$name.oci.tar" before=${#failures[@]}
  if [ ! -s "$archive" ]; then
    fail "$archive is missing: run scripts/build-images.sh first"
    return
  fi

  # 2a. The config, as a registry and a kubelet see it.
  local config_json user entrypoint image_cmd label
  config_json=$(skopeo inspect --config "oci-archive:$archive") ||
    { fail "$name: skopeo cannot read $archive"; return; }
  read_config <<<"$config_json"
  user=${config[User]-}
  entrypoint=${config[Entrypoint]-}
  image_cmd=${config[Cmd]-}
  [ "$user" = "$UID_GID:$UID_GID" ] || fail "$name: config User is '$user', not $UID_GID:$UID_GID"
  [ "$entrypoint" = "[\"/$binary\"]" ] || fail "$name: Entrypoint is $entrypoint, not [\"/$binary\"]"
  [ "$image_cmd" = "$cmd" ] || fail "$name: Cmd is $image_cmd, not $cmd"
  for label in title description source version licenses revision; do
    [ -n "${config[label:org.opencontainers.image.$label]-}" ] ||
      fail "$name: label org.opencontainers.image.$label is missing"
  done
  [ "${config[label:org.opencontainers.image.title]-}" = "$binary" ] ||
    fail "$name: label title is not $binary"
  [ "${config[label:org.opencontainers.image.version]-}" = "$version" ] ||
    fail "$name: label version is not the workspace version $version"
  [ "${config[label:org.opencontainers.image.licenses]-}" = "$license" ] ||
    fail "$name: label licenses is not the workspace license $license"
  [ "${config[label:org.opencontainers.image.source]-}" = "$repository" ] ||
    fail "$name: label source is not the workspace repository $repository"

  # 2b. The files: exactly the binary and the CA bundle, root-owned and read-only.
  local extracted="$CHECK_DIR/$binary" listing files unpacked certificates kind
  listing=$(read_archive "$archive" "$binary" "$extracted") ||
    { fail "$name: cannot read the layers of $archive"; return; }
  files=$(sed -n 's/^files=//p' <<<"$listing")
  unpacked=$(sed -n 's/^unpacked_bytes=//p' <<<"$listing")
  certificates=$(sed -n 's/^certificates=//p' <<<"$listing")
  local expected="/etc/ssl/certs/ca-certificates.crt:file:0:0:0444 /$binary:file:0:0:0555"
  [ "$files" = "$expected" ] ||
    fail "$name: the image's files are '$files', expected '$expected' (binary and CA bundle only)"
  [ "$certificates" -ge 100 ] ||
    fail "$name: /etc/ssl/certs/ca-certificates.crt holds $certificates certificates, not a CA bundle"
  if [ -s "$extracted" ]; then
    kind=$(file -b "$extracted")
    case "$kind" in
      *"static-pie linked"* | *"statically linked"*) ;;
      *) fail "$name: /$binary is not a static binary: $kind" ;;
    esac
  else
    fail "$name: no /$binary in the image"
  fi

  # 2c. The size, unpacked (what a node stores) and as the archive (what it pulls).
  local mib archive_mib
  mib=$(awk -v b="$unpacked" 'BEGIN {printf "%.1f", b / 1048576}')
  archive_mib=$(awk -v b="$(stat -c %s "$archive")" 'BEGIN {printf "%.1f", b / 1048576}')
  [ "$unpacked" -lt $((MAX_MIB * 1024 * 1024)) ] ||
    fail "$name: $mib MiB unpacked, the limit is $MAX_MIB MiB"

  # 2d. Runs, as the image says (no --user), without a network: uid and gid, then --help.
  local loaded ref ctr="check-$name" pid ids output
  loaded=$("${PODMAN[@]}" load --quiet --input "$archive" 2>&1) ||
    { fail "$name: podman cannot load $archive: $loaded"; return; }
  ref=$(sed -n 's/^Loaded image: //p' <<<"$loaded" | head -n1)
  [ -n "$ref" ] || { fail "$name: podman load named no image: $loaded"; return; }
  if ! output=$("${PODMAN[@]}" create --quiet --name "$ctr" --network none "${RUN_OPTS[@]}" \
    "$ref" --help 2>&1 && "${PODMAN[@]}" init "$ctr" 2>&1); then
    fail "$name: podman cannot create and set up a container: $output"
  else
    # After `podman init`, runc has set the process up (namespaces, uid, gid) and waits to
    # execute the binary, which keeps these credentials (it has no set-id bit).
    pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$ctr")
    ids=$(awk '/^Uid:/ {printf "uid %s,%s,%s,%s ", $2, $3, $4, $5} /^Gid:/ {printf "gid %s,%s,%s,%s", $2, $3, $4, $5}' \
      "/proc/$pid/status" 2>/dev/null || true)
    local want="uid $UID_GID,$UID_GID,$UID_GID,$UID_GID gid $UID_GID,$UID_GID,$UID_GID,$UID_GID"
    [ "$ids" = "$want" ] || fail "$name: the container's process runs as '$ids', expected '$want'"
    output=$(timeout 60 "${PODMAN[@]}" start --attach "$ctr" 2>&1 || true)
    run_exit=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$ctr")
    if ! { [ "$run_exit" = 0 ] && grep -q '^Usage:' <<<"$output"; }; then
      fail "$name: '$binary --help' exited $run_exit: $(head -c 400 <<<"$output")"
    fi
  fi
  "${PODMAN[@]}" rm --force "$ctr" >/dev/null 2>&1 || true

  if [ "$name" = operator ]; then
    # The default command is `run`, which needs its Redis address: clap's usage error, exit 2.
    run_image --network none "$ref"
    if ! { [ "$run_exit" = 2 ] && grep -q -- '--redis-urls' <<<"$output"; }; then
      fail "$name: the default command did not start 'maos-operator run' (exit $run_exit): $output"
    fi
    run_image --network none "$ref" crds
    if ! { [ "$run_exit" = 0 ] && grep -q '^kind: CustomResourceDefinition' <<<"$output"; }; then
      fail "$name: 'maos-operator crds' exited $run_exit: $(head -c 400 <<<"$output")"
    fi
  fi

  # 2e. DNS and TLS from inside the image, in the check's network namespace.
  if [ -n "$NETNS" ]; then
    local net=(--network "ns:$NETNS" -v "$NET_DIR/resolv.conf:/etc/resolv.conf:ro")
    if [ "$name" = operator ]; then
      # kube's client, given no CA by the kubeconfig, verifies with the system roots. The
      # image's own (Debian's bundle) do not know the test CA: the handshake fails on the
      # issuer, after kube.maos.test resolved. With the test CA in their place, the handshake
      # succeeds and the test server's HTML page fails to parse as JSON.
      local kube=(-v "$NET_DIR/kubeconfig:/kubeconfig:ro" -e KUBECONFIG=/kubeconfig
        -e MAOS_REDIS_URLS=redis://redis.maos.test:6379 -e MAOS_LOG_FORMAT=text)
      run_image "${net[@]}" "${kube[@]}" "$ref"
      grep -q 'UnknownIssuer' <<<"$output" ||
        fail "$name: with the image's CA bundle, expected the test server's certificate to fail on its issuer (exit $run_exit): $(tail -c 600 <<<"$output")"
      run_image "${net[@]}" "${kube[@]}" \
        -v "$NET_DIR/ca.crt:/etc/ssl/certs/ca-certificates.crt:ro" "$ref"
      grep -q 'Error deserializing response' <<<"$output" ||
        fail "$name: with the test CA at /etc/ssl/certs/ca-certificates.crt, expected TLS to the test server to succeed (exit $run_exit): $(tail -c 600 <<<"$output")"
    else
      # The agent resolves its Redis address through DNS; nothing listens there.
      run_image "${net[@]}" -e ANTHROPIC_API_KEY=not-a-key -e MAOS_AGENT_NAME=check-0 \
        -e MAOS_POOL_UID=00000000-0000-0000-0000-000000000000 \
        -e MAOS_REDIS_URLS=redis://redis.maos.test:6379 "$ref"
      grep -q 'Connection refused' <<<"$output" ||
        fail "$name: expected redis.maos.test to resolve and refuse the connection (exit $run_exit): $(tail -c 600 <<<"$output")"
    fi
  fi

  local verdict=ok
  [ ${#failures[@]} -eq "$before" ] || verdict=FAILED
  summaries+=("$(printf '%-13s %-6s %5s MiB (archive %s MiB)  user %s  entrypoint %s  cmd %s  %s' \
    "maos-$name" "$verdict" "$mib" "$archive_mib" "$user" "$entrypoint" "$image_cmd" "$ref")")
}

start_netns || true
check_image operator maos-operator '["run"]'
check_image agent maos-agent null
grep -q '^kube.maos.test 1$' "$NET_DIR/dns.log" 2>/dev/null ||
  fail "the DNS server saw no query for kube.maos.test"

echo
printf '%s\n' "${summaries[@]}"
if [ ${#failures[@]} -gt 0 ]; then
  echo "check-images: ${#failures[@]} check(s) failed:" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "check-images: both images pass"
