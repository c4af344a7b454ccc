#!/usr/bin/env bash
# Installs what hotpath needs on a Debian machine that has Node/npm: Bun (from the npm `bun`
# package) and the project's dependencies. Debian libraries for later transports are listed in
# APT_PACKAGES; they are installed with apt when running as root, otherwise we say what to install.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# libucx0: the ucx transport (libucp); libucx-dev: the headers its layout test compiles against;
# ucx-utils: ucx_perftest, the benchmark reference.
# libibverbs-dev, librdmacm-dev: the headers the verbs layout test and the software RC test
# fixture compile against (they pull in libibverbs1 and librdmacm1, the rdma transport's
# libraries); perftest: ib_send_lat / ib_write_lat / ib_write_bw, the rdma reference on a device.
# fonts-dejavu-core: text in the benchmark's PNG charts; iproute2: the across-nodes test's
# network namespaces; openssl: the CLI the tcp TLS tests make their CA and certificates with.
# redis-server: the kv benchmark's Redis reference (it pulls in redis-tools: redis-benchmark);
# the benchmark starts its own server, Debian's service is left as the package installs it.
# wrk: the HTTP load generator of the Bun.serve benchmark (bench/serve.bench.ts; without it the
# benchmark uses its Bun load generator and says so).
APT_PACKAGES=(libucx0 libucx-dev ucx-utils libibverbs-dev librdmacm-dev perftest fonts-dejavu-core iproute2 openssl redis-server wrk)

if ! command -v bun >/dev/null 2>&1; then
  echo "setup: installing Bun from npm (npm i -g bun)" >&2
  npm i -g bun >&2
  hash -r
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  else
    echo "setup: missing Debian packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
  fi
fi

if [ ! -d node_modules ] || [ package.json -nt node_modules ]; then
  bun install >&2
  touch node_modules
fi
