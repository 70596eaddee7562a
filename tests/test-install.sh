#!/usr/bin/env bash
# `make install` puts what README's usage lines need where users expect it:
# snapnbd and snapnbd-backup in bin, their man pages (and the plugin's) in
# man1 where `man NAME` finds them, nbdkit-snapnbd-plugin.so in nbdkit's
# plugin directory (pkg-config), from where nbdkit loads it and serves.
# In a git checkout, the distribution holds every tracked file (EXTRA_DIST
# complete, so that `make distcheck` builds what the tree builds).
source "${srcdir:-$(dirname "$0")}/functions.sh"
requires pkg-config nbdkit nbdinfo qemu-img

builddir=$(dirname "$SNAPNBD")
root=$tmp/root
make -s -C "$builddir" install DESTDIR="$root" >"$tmp/log" 2>&1 ||
    fail "make install: $(tail -20 "$tmp/log")"
prefix=$(sed -n 's/^prefix = //p' "$builddir/Makefile")
plugindir=$(sed -n 's/^NBDKIT_PLUGINDIR = //p' "$builddir/Makefile")
[ "$plugindir" = "$(pkg-config --variable=plugindir nbdkit)" ] ||
    fail "the plugin goes to $plugindir, not nbdkit's plugin directory"

for f in bin/snapnbd bin/snapnbd-backup; do
    [ -x "$root$prefix/$f" ] || fail "$prefix/$f not installed"
done
"$root$prefix/bin/snapnbd" --version | grep -q '^snapnbd ' || fail "installed snapnbd does not run"
for page in snapnbd snapnbd-backup nbdkit-snapnbd-plugin; do
    f=$root$prefix/share/man/man1/$page.1
    [ -s "$f" ] || fail "man page $page.1 not installed"
    if command -v man >/dev/null; then
        MANPATH=$root$prefix/share/man man -w "$page" >/dev/null 2>&1 ||
            fail "man $page does not find the installed page"
    fi
done
plugin=$root$plugindir/nbdkit-snapnbd-plugin.so
[ -f "$plugin" ] || fail "the plugin is not in $plugindir"

# The installed plugin serves (nbdkit loads it by path from DESTDIR).
qemu-img create -q -f raw "$tmp/disk.img" 1M
requires_plugin # the sanitizer runtime first, for a sanitized build
run_nbdkit -U - "$plugin" file="$tmp/disk.img" --run 'nbdinfo --size "$uri"' >"$tmp/size" 2>&1 ||
    fail "nbdkit with the installed plugin: $(cat "$tmp/size")"
grep -qx 1048576 "$tmp/size" || fail "installed plugin: size $(cat "$tmp/size")"

# The distribution has every file git tracks (but git's own and CI files).
top=$(cd "$srcdir/.." && pwd)
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    make -s -C "$builddir" distdir distdir="$tmp/dist" >"$tmp/log" 2>&1 ||
        fail "make distdir: $(tail -20 "$tmp/log")"
    git -C "$top" ls-files | grep -v -e '^\.gitignore$' -e '^\.ci/' -e '^m4/\.keep$' |
        while read -r f; do
            [ -e "$tmp/dist/$f" ] || echo "$f"
        done >"$tmp/missing"
    [ ! -s "$tmp/missing" ] || fail "not in the distribution (EXTRA_DIST): $(cat "$tmp/missing")"
fi
