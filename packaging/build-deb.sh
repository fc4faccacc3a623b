#!/usr/bin/env bash
# Builds target/debian/supamount_VERSION-1_ARCH.deb from a clone of the repository:
#   bash packaging/build-deb.sh
# Needs a Rust toolchain, and (installed here when missing, with apt-get as root) the FUSE
# headers and pkg-config; installs cargo-deb with cargo when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! pkg-config --exists fuse3 2>/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q --no-install-recommends libfuse3-dev pkg-config </dev/null
  else
    echo "build-deb.sh: install libfuse3-dev and pkg-config first (sudo apt-get install ...)" >&2
    exit 1
  fi
fi
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# The man pages come from the clap definition, so they match the binary being packaged.
cargo run --release --example gen-man -- "$TARGET_DIR/man"
# cargo-deb reads assets under target/; point target/man there when the target dir is elsewhere.
if [ "$TARGET_DIR" != "$(pwd)/target" ]; then
  mkdir -p target && ln -sfn "$TARGET_DIR/man" target/man
fi
# Debug info stays in the build tree; the package gets a stripped binary.
cargo deb --strip "$@"
ls -l "$TARGET_DIR"/debian/supamount_*.deb
