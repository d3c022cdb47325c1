#!/bin/sh
# Assembles the runtime image's whole file system in DEST, run by the Dockerfile's runtime
# stage: the given programs and the shared libraries the dynamic loader resolves for them
# (ldd), each at the path the loader looks in, plus the users and the name-service config
# that a process expects. No shell, no package manager: nothing else is in the image.
#
#   rootfs.sh DEST PROGRAM... [-- LIBRARY...]
#
# LIBRARY names a library loaded with dlopen (ldd cannot see those): it is copied under the
# loader's default path with its own dependencies. A library ldd cannot find stops the
# build, so a missing runtime package fails here, not in a pod.
set -eu

dest=$1
shift
mkdir -p "$dest"

# copy PATH: the file (through any symlink) at the same path under DEST.
copy() {
    mkdir -p "$dest$(dirname "$1")"
    cp -L "$1" "$dest$1"
}

# copy_with_libs FILE: FILE and every library ldd resolves for it.
copy_with_libs() {
    copy "$1"
    if ldd "$1" | grep -q 'not found'; then
        ldd "$1" >&2
        echo "rootfs: $1 needs a library that is not installed" >&2
        exit 1
    fi
    # "libx.so.1 => /lib/.../libx.so.1 (0x...)" and the loader's "/lib64/ld-linux... (0x...)"
    for lib in $(ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\) (.*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'); do
        [ -e "$dest$lib" ] || copy "$lib"
    done
}

dlopened=0
for arg in "$@"; do
    if [ "$arg" = -- ]; then
        dlopened=1
        continue
    fi
    if [ "$dlopened" = 1 ]; then
        path=$(ldconfig -p | awk -v so="$arg" '$1 == so { print $NF; exit }')
        [ -n "$path" ] || {
            echo "rootfs: $arg is not installed" >&2
            exit 1
        }
        copy_with_libs "$path"
    else
        copy_with_libs "$arg"
    fi
done

# The loader's cache, so that dlopen finds libraries as on the build machine.
mkdir -p "$dest/etc"
ldconfig -r "$dest" 2>/dev/null || true

# root and the non-root user the image runs as (uid/gid 65532, as the chart's securityContext).
cat >"$dest/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
pilotfish:x:65532:65532:pilotfish:/nonexistent:/usr/sbin/nologin
EOF
cat >"$dest/etc/group" <<'EOF'
root:x:0:
pilotfish:x:65532:
EOF
# libcurl resolves host names through glibc, which reads this (c-ares reads /etc/hosts and
# the resolv.conf the container runtime provides).
echo "hosts: files dns" >"$dest/etc/nsswitch.conf"
mkdir -p "$dest/tmp"
chmod 1777 "$dest/tmp"
