#!/usr/bin/env bash
# Builds the container images of maos-operator and maos-agent without a Docker engine: static
# binaries from cargo, one build context per image under $CARGO_TARGET_DIR/images/, `buildah bud`
# on operator/Dockerfile and agent-runner/Dockerfile, and an OCI archive per image:
#   $CARGO_TARGET_DIR/images/maos-operator.oci.tar   ghcr.io/maos/operator:<version>
#   $CARGO_TARGET_DIR/images/maos-agent.oci.tar      ghcr.io/maos/agent-runner:<version>
# (load one with `podman load -i …` or `skopeo copy oci-archive:… docker://…`). Installs nothing:
# scripts/install-image-tools.sh does. scripts/check-images.sh checks what this wrote.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
IMAGES_DIR="$TARGET_DIR/images"
# The host's triple, named explicitly so that RUSTFLAGS reach only the binaries (and their
# dependencies), not build scripts and proc-macros, which must stay dynamic to be loaded.
TRIPLE=x86_64-unknown-linux-gnu
# The Cargo profile the binaries are built with (see [profile.image] in Cargo.toml).
PROFILE="${IMAGE_PROFILE:-image}"
# Debian's bundle of the Mozilla CA roots (package ca-certificates).
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
OPERATOR_REPO="${OPERATOR_IMAGE_REPO:-ghcr.io/maos/operator}"
# The name DEFAULT_AGENT_IMAGE in core/src/api/v1alpha1/pool.rs gives an AgentPool's pods.
AGENT_REPO="${AGENT_IMAGE_REPO:-ghcr.io/maos/agent-runner}"

fail() {
  echo "build-images: $*" >&2
  exit 1
}

for command in buildah file python3; do
  command -v "$command" >/dev/null 2>&1 ||
    fail "$command not found: run scripts/install-image-tools.sh first"
done
[ -s "$CA_BUNDLE" ] || fail "no CA bundle at $CA_BUNDLE (Debian package ca-certificates)"
[ "$(uname -m)" = x86_64 ] || fail "the images are built for $TRIPLE, this machine is $(uname -m)"

# buildah keeps its images here rather than in /var/lib/containers or the user's home: vfs (plain
# directories) works as root on any filesystem, and these images are one small layer each.
# Started afresh on every run, so no stale image or tag survives; the archives are the product.
mkdir -p "$IMAGES_DIR"
IMAGES_ABS="$(cd "$IMAGES_DIR" && pwd)"
# Absolute: buildah's helper processes do not run in this directory.
export CONTAINERS_STORAGE_CONF="$IMAGES_ABS/storage.conf"
rm -rf "$IMAGES_ABS/storage" "$IMAGES_ABS/runroot"
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "vfs"
graphroot = "$IMAGES_ABS/storage"
runroot = "$IMAGES_ABS/runroot"
EOF

version=$("$CARGO" metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "maos-operator"))')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# Image and file times from the last commit, so the same binaries give the same image digest.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)

# The `image` profile: release, optimised for size (as quick to build as opt-level 1, and
# smaller), without release's thin LTO across a crate's codegen units (a fifth less CPU for a
# few per cent more size) and stripped (the operator is over 40 MiB with its symbols). Until
# Cargo.toml has the [profile.image] stanza, the same settings are given on the command line.
profile_config=()
if [ "$PROFILE" = image ] && ! grep -q '^\[profile\.image\]' Cargo.toml; then
  profile_config=(
    --config 'profile.image.inherits="release"'
    --config 'profile.image.opt-level="s"'
    --config 'profile.image.lto="off"'
    --config 'profile.image.strip=true'
  )
fi

echo "build-images: static $PROFILE binaries for $TRIPLE (version $version)"
start=$SECONDS
# Set, not added to: the images do not take a developer's own flags (say -C target-cpu=native).
RUSTFLAGS='-C target-feature=+crt-static' "$CARGO" build --locked "${profile_config[@]}" \
  --profile "$PROFILE" --target "$TRIPLE" \
  -p maos-operator --bin maos-operator -p maos-agent-runner --bin maos-agent
echo "build-images: binaries built in $((SECONDS - start)) s"
# Cargo names the dev profile's directory `debug`.
[ "$PROFILE" = dev ] && out_dir=debug || out_dir="$PROFILE"
BIN_DIR="$TARGET_DIR/$TRIPLE/$out_dir"

# image name, Dockerfile, binary, repository
build_image() {
  local name=$1 dockerfile=$2 binary=$3 repo=$4
  local context="$IMAGES_DIR/$name" archive="$IMAGES_DIR/maos-$name.oci.tar"
  local start=$SECONDS
  # FROM scratch has no dynamic loader and no libc: the binary must need neither.
  case "$(file -b "$BIN_DIR/$binary")" in
    *"static-pie linked"* | *"statically linked"*) ;;
    *) fail "$BIN_DIR/$binary is not static: $(file -b "$BIN_DIR/$binary")" ;;
  esac
  rm -rf "$context" "$archive"
  mkdir -p "$context"
  cp "$BIN_DIR/$binary" "$context/$binary"
  cp "$CA_BUNDLE" "$context/ca-certificates.crt"
  # chroot isolation and no pull: nothing runs in the build (no RUN) and scratch is no image.
  # --identity-label=false: no io.buildah.version label, the OCI labels only.
  buildah bud --quiet --isolation chroot --pull=never --format oci \
    --timestamp "$epoch" --identity-label=false \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --file "$dockerfile" --tag "$repo:$version" "$context" >/dev/null
  buildah push --quiet "$repo:$version" "oci-archive:$archive:$repo:$version"
  echo "build-images: $archive ($repo:$version, $(du -k "$archive" | cut -f1) KiB) in $((SECONDS - start)) s"
}

build_image operator operator/Dockerfile maos-operator "$OPERATOR_REPO"
build_image agent agent-runner/Dockerfile maos-agent "$AGENT_REPO"
