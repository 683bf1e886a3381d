#!/usr/bin/env bash
# Builds the release artifacts into OUT (default target/package):
#   spillway-<version>-x86_64-linux-static          a statically linked binary (+ .sha256)
#   spillway_<version>_amd64.deb                    the Debian package (systemd unit, config, man pages, completions)
#
# The binary is built once, static (glibc with crt-static on x86_64-unknown-linux-gnu),
# and that same binary goes into the .deb. The .deb is assembled from a staged tree with
# dpkg-deb, no cargo-deb needed (Cargo.toml's [package.metadata.deb] describes the same
# package for those who prefer `cargo deb`).
#
#   scripts/package.sh                     build the static binary, then both artifacts
#   scripts/package.sh --binary PATH       package an existing binary instead of building
#   scripts/package.sh --static-only       only the static binary
#   scripts/package.sh --out DIR
#
# Honours SOURCE_DATE_EPOCH (build date, file times in the .deb) and CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/package
binary=""
deb=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --static-only) deb=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target=x86_64-unknown-linux-gnu
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -z "$binary" ]; then
  echo "== building the static binary ($target, crt-static, release)"
  target_dir=${CARGO_TARGET_DIR:-target}
  # --target keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic.
  # getrandom finds glibc's getrandom() with dlsym, which a static binary cannot, and
  # falls back to /dev/urandom: absent in an empty root. Link the call directly.
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
    cargo build --release --locked --target "$target" --bin spillway
  binary="$target_dir/$target/release/spillway"
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

# The release profile keeps line tables for backtraces; the artifacts do without.
stripped="$(mktemp -d)/spillway"
strip --strip-debug -o "$stripped" "$binary"
binary="$stripped"

static="$out/spillway-$version-x86_64-linux-static"
if readelf -d "$binary" 2>/dev/null | grep -q NEEDED; then
  echo "note: $binary is dynamically linked; it is packaged, but not copied as the static binary" >&2
  rm -f "$static" "$static.sha256"
else
  install -m 0755 "$binary" "$static"
  (cd "$out" && sha256sum "$(basename "$static")" > "$(basename "$static").sha256")
  echo "static binary: $static"
fi
[ "$deb" = 1 ] || exit 0

echo "== staging the Debian package"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" \
  "$root/etc/spillway/rules" "$root/etc/default" "$root/usr/share/doc/spillway" \
  "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
install -m 0755 "$binary" "$root/usr/bin/spillway"
install -m 0644 packaging/spillway.service "$root/usr/lib/systemd/system/spillway.service"
install -m 0644 packaging/spillway.yml "$root/etc/spillway/spillway.yml"
install -m 0644 packaging/rules/example.yml "$root/etc/spillway/rules/example.yml"
install -m 0644 packaging/default "$root/etc/default/spillway"
install -m 0644 packaging/debian/copyright "$root/usr/share/doc/spillway/copyright"
install -m 0644 README.md "$root/usr/share/doc/spillway/README.md"

# Completions and man pages come from the clap definitions of this very binary.
assets="$stage/assets"
"$binary" generate-assets --out "$assets" >/dev/null
install -m 0644 "$assets/completions/spillway.bash" "$root/usr/share/bash-completion/completions/spillway"
install -m 0644 "$assets/completions/_spillway" "$root/usr/share/zsh/vendor-completions/_spillway"
install -m 0644 "$assets/completions/spillway.fish" "$root/usr/share/fish/vendor_completions.d/spillway.fish"
for page in "$assets"/man/*.1; do
  gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
  chmod 0644 "$root/usr/share/man/man1/$(basename "$page").gz"
done

install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" packaging/debian/control > "$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/md5sums"

package="$out/spillway_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$package" >/dev/null
echo "debian package: $package"
