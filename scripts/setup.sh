#!/usr/bin/env bash
# Installs what ocibuild's demo, tests and benchmark need, and says what it does.
# Idempotent: a second run checks and does nothing. Needs root for apt-get (it is, in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages: the real parts (sandbox, registry, independent readers, base image material).
need_pkgs=()
check() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
check bwrap bubblewrap
check slirp4netns slirp4netns
check docker-registry docker-registry
check skopeo skopeo
check umoci umoci
check oci-image-tool oci-image-tool
check qemu-aarch64-static qemu-user-static
check htpasswd apache2-utils
check openssl openssl
check git git
check setpriv util-linux
check xz xz-utils
check bzip2 bzip2
check zstd zstd
check ssh-agent openssh-client
check newuidmap uidmap
check fuse-overlayfs fuse-overlayfs
check mmdebstrap mmdebstrap
check pigz pigz  # the benchmark's x2 baseline (parallel gzip on every core)
check /usr/bin/time time  # GNU time: the benchmark's peak RSS of each ocibuild build
check podman podman
check runc runc
check setcap libcap2-bin
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=("busybox-static")
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${need_pkgs[*]} (run as root, or install them: apt-get install ${need_pkgs[*]})"
    exit 1
  fi
  say "installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Debian's arm64 busybox-static, unpacked (not installed: it conflicts with the amd64 one),
# for the multi-platform base images the tests and the demo build.
arm_bb=.cache/debs/busybox-arm64/bin/busybox
if [ ! -x "$arm_bb" ] && [ "$(id -u)" = 0 ]; then
  say "fetching Debian's busybox-static:arm64 into .cache/debs"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  mkdir -p .cache/debs
  ( cd .cache/debs && { apt-get download busybox-static:arm64 >/dev/null 2>&1 || { apt-get update -qq && apt-get download busybox-static:arm64 >/dev/null; }; } )
  rm -rf .cache/debs/busybox-arm64
  dpkg-deb -x .cache/debs/busybox-static_*_arm64.deb .cache/debs/busybox-arm64
fi

# Node modules, from the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing node modules (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The TypeScript build (dist/), rebuilt when any source is newer.
if [ ! -f dist/index.js ] || [ -n "$(find src tsconfig.json -newer dist/index.js -print -quit 2>/dev/null)" ]; then
  say "building TypeScript (tsc)"
  npx tsc -p tsconfig.json
fi
# The CLI bundle (dist/ocibuild.cjs, see scripts/bundle.mjs), remade after any tsc run.
if [ ! -f dist/ocibuild.cjs ] || [ -n "$(find dist -name '*.js' -newer dist/ocibuild.cjs -print -quit 2>/dev/null)" ]; then
  say "bundling the CLI (esbuild)"
  node scripts/bundle.mjs
fi
