#!/bin/sh
# Builds and runs the pilotfish container image with whichever engine this machine has:
# docker or podman when their daemon/runtime answers, else buildah (installed with apt-get
# when nothing is there). `make image` and test/integration/test_image.py call it.
#
#   packaging/image.sh engine           print the engine that would be used (or fail)
#   packaging/image.sh build VERSION    build pilotfish:VERSION and pilotfish:latest
#   packaging/image.sh run [--volume HOST:CTR[:ro]]... IMAGE [ARG...]
#                                       run IMAGE's entrypoint with ARGs, as the image's
#                                       user, on the host's network, like `docker run`
#   packaging/image.sh config IMAGE     print IMAGE's OCI config (User, Entrypoint, ...) as JSON
#   packaging/image.sh files IMAGE      list every path in IMAGE's file system, one a line:
#                                       its size in bytes (0 for a directory), a space, the path
#
# The Dockerfile starts from debian:12. When the engine does not have it and cannot pull it
# (a machine that reaches Debian's package mirror but no container registry), it is made
# here: `debootstrap --variant=minbase bookworm` from the mirror apt is configured with,
# imported as debian:12. It is made once and kept in the engine's storage.
#
# Environment: PILOTFISH_ENGINE (docker, podman or buildah) picks the engine;
# DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR override the mirrors read from apt's sources
# (bookworm's and bookworm-security's); IMAGE_ENGINE_PKGS and
# IMAGE_BASE_PKGS are the Debian packages of buildah and of debootstrap (the Makefile's).
set -eu

BASE_IMAGE=debian:12
# buildah needs no daemon; its vfs storage works where overlay mounts are not allowed (in a
# container). PILOTFISH_STORAGE_DRIVER=overlay is faster where overlay works.
BUILDAH_STORAGE="--storage-driver ${PILOTFISH_STORAGE_DRIVER:-vfs}"
IMAGE_ENGINE_PKGS="${IMAGE_ENGINE_PKGS:-buildah}"
IMAGE_BASE_PKGS="${IMAGE_BASE_PKGS:-debootstrap debian-archive-keyring}"
LOCK="${TMPDIR:-/tmp}/pilotfish-image.lock"

die() {
    echo "image: $*" >&2
    exit 1
}

# install_missing PACKAGE...: apt-get install those not installed yet.
install_missing() {
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null ||
        die "no container engine works here and apt-get is missing: install docker, podman or buildah"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing:$missing" >&2
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null
}

# An engine counts only when it can build: a docker client without a daemon does not.
engine_works() {
    case "$1" in
    docker) command -v docker >/dev/null && docker info >/dev/null 2>&1 ;;
    podman) command -v podman >/dev/null && podman info >/dev/null 2>&1 ;;
    buildah) command -v buildah >/dev/null && buildah $BUILDAH_STORAGE --version >/dev/null 2>&1 ;;
    *) die "PILOTFISH_ENGINE=$1: expected docker, podman or buildah" ;;
    esac
}

find_engine() {
    if [ -n "${PILOTFISH_ENGINE:-}" ]; then
        engine_works "$PILOTFISH_ENGINE" || die "PILOTFISH_ENGINE=$PILOTFISH_ENGINE does not work here"
        echo "$PILOTFISH_ENGINE"
        return
    fi
    for e in docker podman buildah; do
        if engine_works "$e"; then
            echo "$e"
            return
        fi
    done
    return 1
}

# eng ARG...: the engine's command, with buildah's storage.
eng() {
    if [ "$ENGINE" = buildah ]; then
        # shellcheck disable=SC2086
        buildah $BUILDAH_STORAGE "$@"
    else
        "$ENGINE" "$@"
    fi
}

image_exists() {
    case "$ENGINE" in
    docker) docker image inspect "$1" >/dev/null 2>&1 ;;
    *) eng inspect --type image "$1" >/dev/null 2>&1 ;;
    esac
}

# apt_uri SUITE: the URI apt fetches SUITE from: a "deb" line of sources.list(.d/*.list) or
# a deb822 stanza of sources.list.d/*.sources whose suites include it.
apt_uri() {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENT...
        awk -v suite="$1" '$1 == "deb" { i = 2
                               if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                               if ($(i + 1) == suite) { print $i; exit } }' "$f"
    done | head -n 1 | grep . && return
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # Stanzas are separated by blank lines.
        awk -v suite="$1" 'BEGIN { RS = ""; FS = "\n" }
             { uri = ""; found = 0; enabled = 1
               for (i = 1; i <= NF; i++) {
                   if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); uri = u[2] }
                   if ($i ~ /^Suites:/) {
                       n = split($i, w, /[ \t]+/)
                       for (j = 2; j <= n; j++) if (w[j] == suite) found = 1
                   }
                   if ($i ~ /^Enabled:[ \t]*no/) enabled = 0
               }
               if (uri != "" && found && enabled) { print uri; exit } }' "$f"
    done | head -n 1 | grep . && return
    return 1
}

# Makes debian:12 from Debian's packages: a minbase bookworm root, without apt's lists and
# downloaded packages, imported as a one-layer image.
make_base() {
    mirror=${DEBIAN_MIRROR:-$(apt_uri bookworm)} ||
        die "no bookworm mirror in /etc/apt/sources.list{,.d}: set DEBIAN_MIRROR=http://<mirror>/debian"
    security=${DEBIAN_SECURITY_MIRROR:-$(apt_uri bookworm-security || true)}
    install_missing $IMAGE_BASE_PKGS
    work=$(mktemp -d "${TMPDIR:-/tmp}/pilotfish-base.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "image: making $BASE_IMAGE with debootstrap --variant=minbase bookworm $mirror" >&2
    started=$(date +%s)
    if ! debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/log" 2>&1; then
        tail -n 20 "$work/log" >&2
        die "debootstrap failed (log above)"
    fi
    # The images built on it get bookworm's updates and, where apt here has the security
    # archive, its fixes (the runtime image copies libssl and libcurl from there).
    {
        echo "deb $mirror bookworm main"
        echo "deb $mirror bookworm-updates main"
        [ -z "$security" ] || echo "deb $security bookworm-security main"
    } >"$work/root/etc/apt/sources.list"
    rm -rf "$work"/root/var/lib/apt/lists/* "$work"/root/var/cache/apt/archives/*.deb \
        "$work"/root/var/log/*.log
    tar -C "$work/root" -cf "$work/root.tar" .
    case "$ENGINE" in
    buildah)
        ctr=$(buildah $BUILDAH_STORAGE from scratch)
        buildah $BUILDAH_STORAGE add --quiet "$ctr" "$work/root.tar" / >/dev/null
        buildah $BUILDAH_STORAGE config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd /bin/bash "$ctr"
        buildah $BUILDAH_STORAGE commit --quiet "$ctr" "$BASE_IMAGE" >/dev/null
        buildah $BUILDAH_STORAGE rm "$ctr" >/dev/null
        ;;
    *)
        "$ENGINE" import --change 'CMD ["/bin/bash"]' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            "$work/root.tar" "$BASE_IMAGE" >/dev/null
        ;;
    esac
    rm -rf "$work"
    trap - EXIT
    echo "image: made $BASE_IMAGE in $(($(date +%s) - started))s" >&2
}

# debian:12 in the engine's storage: there already, pulled, or made.
ensure_base() {
    image_exists "$BASE_IMAGE" && return 0
    if eng pull "docker.io/library/$BASE_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    echo "image: cannot pull $BASE_IMAGE from a registry" >&2
    make_base
}

build() {
    version=$1
    root=$(cd "$(dirname "$0")/.." && pwd)
    # One base image and one build at a time per machine: images and the base are shared by
    # every checkout.
    exec 9>"$LOCK"
    flock 9
    ensure_base
    previous=$(eng images --quiet --no-trunc pilotfish:latest 2>/dev/null || true)
    log=$(mktemp "${TMPDIR:-/tmp}/pilotfish-image-log.XXXXXX")
    case "$ENGINE" in
    buildah)
        set -- buildah $BUILDAH_STORAGE bud --isolation chroot --pull=never --layers=false
        ;;
    podman) set -- podman build --pull=never ;;
    docker) set -- docker build ;;
    esac
    # The build's output only when it fails: apt's and the compiler's chatter otherwise.
    if ! "$@" -t "pilotfish:$version" -t pilotfish:latest "$root" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "$* failed (the end of its output is above)"
    fi
    rm -f "$log"
    # The image this build replaced, unless another tag still names it: rebuilds do not pile
    # up untagged images.
    current=$(eng images --quiet --no-trunc pilotfish:latest 2>/dev/null || true)
    if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
        eng rmi "$previous" >/dev/null 2>&1 || true
    fi
    echo "image: built with $ENGINE: pilotfish:$version (and pilotfish:latest)"
}

# Runs the image like `docker run --rm --network host`: its entrypoint and user; with
# buildah (which has no run of an image), in a working container removed afterwards.
run() {
    vols=""
    while [ "${1:-}" = --volume ]; do
        vols="$vols --volume $2"
        shift 2
    done
    image=$1
    shift
    case "$ENGINE" in
    buildah)
        ctr=$(buildah $BUILDAH_STORAGE from --pull=never "$image")
        trap 'buildah $BUILDAH_STORAGE rm "$ctr" >/dev/null 2>&1' EXIT INT TERM
        user=$(buildah $BUILDAH_STORAGE inspect --format '{{.OCIv1.Config.User}}' "$ctr")
        entry=$(buildah $BUILDAH_STORAGE inspect --format '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}' "$ctr")
        if [ $# -eq 0 ]; then
            # No arguments: the image's CMD, as `docker run` does.
            set -- $(buildah $BUILDAH_STORAGE inspect --format '{{range .OCIv1.Config.Cmd}}{{.}} {{end}}' "$ctr")
        fi
        # chroot isolation: the host's network and no namespaces to set up, so this works
        # inside an unprivileged container too.
        # shellcheck disable=SC2086
        buildah $BUILDAH_STORAGE run --isolation chroot --user "$user" $vols "$ctr" -- $entry "$@"
        ;;
    *)
        # shellcheck disable=SC2086
        "$ENGINE" run --rm --network host $vols "$image" "$@"
        ;;
    esac
}

config() {
    case "$ENGINE" in
    buildah)
        eng inspect --type image "$1" |
            python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"]))'
        ;;
    *) eng image inspect --format '{{json .Config}}' "$1" ;;
    esac
}

files() {
    case "$ENGINE" in
    buildah)
        ctr=$(eng from --pull=never "$1")
        trap 'eng umount "$ctr" >/dev/null 2>&1; eng rm "$ctr" >/dev/null 2>&1' EXIT
        mnt=$(eng mount "$ctr")
        (cd "$mnt" && find . -mindepth 1 \( -type d -printf '0 %p\n' \) -o -printf '%s %p\n') |
            sed 's| \./| /|'
        ;;
    *)
        # An image without a shell cannot run `find`: read its exported file system.
        ctr=$(eng create "$1")
        trap 'eng rm "$ctr" >/dev/null 2>&1' EXIT
        eng export "$ctr" | tar -tv |
            awk '{ p = $6; sub(/^\.\//, "", p); sub(/\/$/, "", p)
                   if (p != "" && p != ".") print (substr($1, 1, 1) == "d" ? 0 : $3), "/" p }'
        ;;
    esac
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
engine)
    find_engine
    ;;
build)
    [ $# -eq 1 ] || die "usage: $0 build VERSION"
    ENGINE=$(find_engine) || {
        install_missing $IMAGE_ENGINE_PKGS
        ENGINE=$(find_engine) || die "buildah was installed but does not work"
    }
    build "$1"
    ;;
run | config | files)
    ENGINE=$(find_engine) || die "no container engine: run \`make image\` first"
    "$cmd" "$@"
    ;;
*)
    die "usage: $0 engine | build VERSION | run [--volume H:C[:ro]]... IMAGE [ARG...] | config IMAGE | files IMAGE"
    ;;
esac
