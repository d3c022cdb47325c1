"""The container image: built by `make image` once per test session and run.

`make image` builds the Dockerfile with the engine this machine has (docker, podman, else
buildah, installed when none is; packaging/image.sh). The image then runs the way the
chart runs it: its entrypoint with the rendered Deployment's args, the rendered config
mounted where those args point, as the image's non-root user. pilotfish from the image
answers --version, passes --check-config on every documented mode's rendered config, and
serves a request to a backend on 127.0.0.1 (the image runs on the host's network: buildah's
chroot isolation shares it, docker and podman get --network host) with its admin /ready.
The rendered Deployments and the plain manifests are checked against the image's own
config and files: entrypoint, config path, user, ports, and the preStop command.
"""

import json
import os
import re
import shutil
import signal
import subprocess

import pytest

from harness import (
    LOCALHOST,
    PILOTFISH_BIN,
    REPO,
    free_port,
    http_request,
    is_sanitizer_build,
    wait_for,
)
from test_packaging import (  # noqa: F401 (parent_chart is a fixture)
    HELM,
    MODES,
    config_of,
    docs_of,
    manifests,
    parent_chart,
    pilotfish_container,
    pilotfish_version,
    pod_specs,
    render,
    run,
)

IMAGE_SH = os.path.join(REPO, "packaging", "image.sh")
# A generous bound for a hung build, not an expectation: the first build makes the Debian
# base image too (65-75 s on a 2-core machine), later ones 25-50 s.
BUILD_TIMEOUT = 1800
RUN_TIMEOUT = 120  # seconds for one short run of the image (--version, --check-config)
START_TIMEOUT = 60.0  # seconds for pilotfish in the image to answer /ready
MAX_IMAGE_BYTES = 40 * 1024 * 1024  # the runtime image holds pilotfish and its libraries only
UID = 65532


def image_sh(*args, timeout=RUN_TIMEOUT, check=True):
    proc = subprocess.run([IMAGE_SH, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"packaging/image.sh {' '.join(args)} exited {proc.returncode}:\n"
                    f"{proc.stderr}{proc.stdout}")
    return proc


def can_install_an_engine():
    return shutil.which("apt-get") is not None and (os.geteuid() == 0 or shutil.which("sudo"))


class Image:
    def __init__(self, ref, engine, last_line):
        self.ref = ref
        self.engine = engine
        self.last_line = last_line
        self._config = None
        self._files = None

    def config(self):
        """The image's OCI config: User, Entrypoint, Cmd, Env, ExposedPorts, Labels."""
        if self._config is None:
            self._config = json.loads(image_sh("config", self.ref).stdout)
        return self._config

    def files(self):
        """{path: size in bytes} of the image's file system."""
        if self._files is None:
            self._files = {}
            for line in image_sh("files", self.ref).stdout.splitlines():
                size, path = line.split(" ", 1)
                self._files[path] = int(size)
        return self._files

    def run(self, *args, volumes=(), timeout=RUN_TIMEOUT):
        vols = [a for v in volumes for a in ("--volume", v)]
        return image_sh("run", *vols, self.ref, *args, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image():
    """`make image`, once for the module; skipped only where no engine is or can be installed."""
    found = image_sh("engine", check=False)
    if found.returncode != 0 and not can_install_an_engine():
        pytest.skip("no container engine (docker, podman or buildah) works here and none can "
                    "be installed (apt-get as root or with sudo); the image is not tested")
    proc = subprocess.run(["make", "-C", REPO, "--no-print-directory", "image"],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, f"make image exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
    engine = image_sh("engine").stdout.strip()
    last = proc.stdout.strip().splitlines()[-1]
    return Image(f"pilotfish:{pilotfish_version()}", engine, last)


def test_make_image_names_the_engine_and_both_tags(image):
    version = pilotfish_version()
    assert image.last_line == (f"image: built with {image.engine}: pilotfish:{version} "
                               "(and pilotfish:latest)")
    latest = json.loads(image_sh("config", "pilotfish:latest").stdout)
    assert latest == image.config()
    assert image.config()["Labels"]["org.opencontainers.image.version"] == version


def test_image_runs_as_non_root_with_the_binary_as_entrypoint(image):
    config = image.config()
    assert config["User"] == f"{UID}:{UID}"  # numeric: runAsNonRoot can verify it
    assert config["Entrypoint"] == ["/usr/local/bin/pilotfish"]
    assert config["Cmd"] == ["--config", "/etc/pilotfish/pilotfish.json"]


def test_image_is_minimal_without_a_shell_or_package_manager(image):
    files = image.files()
    assert "/usr/local/bin/pilotfish" in files
    for path in ("/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", "/usr/bin/apt-get",
                 "/usr/bin/dpkg", "/usr/bin/env"):
        assert path not in files, f"{path} is in the image"
    size = sum(files.values())
    assert size < MAX_IMAGE_BYTES, f"the image holds {size} bytes"
    for path in ("/etc/passwd", "/etc/group", "/usr/bin/sleep", "/lib64/ld-linux-x86-64.so.2"):
        assert path in files, f"{path} is not in the image"


def test_version_from_the_image(image):
    proc = image.run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"pilotfish {pilotfish_version()}"


def config_dir(tmp_path, name, text):
    """A directory holding the file name with text, readable by the image's user as a
    ConfigMap volume is (pytest's directories are the owner's only)."""
    d = tmp_path / "config"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    (d / name).write_text(text)
    (d / name).chmod(0o644)
    return d


def deployment_config_mount(spec):
    """(config file path in the container, the volume's source) of the pilotfish container."""
    pf = pilotfish_container(spec)
    path = pf["args"][pf["args"].index("--config") + 1]
    mounts = [m for m in pf["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"no single volume mounted at {path}: {pf['volumeMounts']}"
    return path, mounts[0]


@pytest.mark.parametrize("mode", MODES)
def test_rendered_config_passes_check_config_in_the_image(image, mode, tmp_path):
    """The config each mode renders, where the image's CMD reads it (the Deployments mount
    it there: test_deployments_run_the_image_as_it_expects)."""
    path = image.config()["Cmd"][1]
    d = config_dir(tmp_path, os.path.basename(path), config_of(render(mode)))
    proc = image.run("--check-config", path, volumes=[f"{d}:{os.path.dirname(path)}:ro"])
    assert proc.returncode == 0, f"{mode}:\n{proc.stdout}{proc.stderr}"
    assert proc.stdout.strip() == f"{path}: ok"


def test_check_config_in_the_image_refuses_a_bad_config(image, tmp_path):
    d = config_dir(tmp_path, "pilotfish.json", '{"listeners": []}')
    proc = image.run("--check-config", "/etc/pilotfish/pilotfish.json",
                     volumes=[f"{d}:/etc/pilotfish:ro"])
    assert proc.returncode != 0
    assert "/etc/pilotfish/pilotfish.json" in proc.stderr


def session_processes(sid, name):
    """[(pid, uid)] of the processes called name in session sid."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) != sid:
                continue
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue  # exited meanwhile
        if re.search(rf"^Name:\s+{re.escape(name)}$", status, re.M):
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
            out.append((int(pid), uid))
    return out


def stop_run(proc, pids, grace=30):
    """SIGTERM to pilotfish (pids, when its processes are ours to see) or else to the run's
    session (docker and podman pass it on), then SIGKILL to the session after grace seconds.
    Returns whether the run ended within grace."""
    if proc.poll() is None:
        if pids:
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return False
    return True


def test_image_serves_a_request_as_the_non_root_user_with_the_charts_args(
        image, start_backend, tmp_path):
    """The gateway Deployment's args and config mount, the config the chart renders for
    static endpoints with the addresses moved to 127.0.0.1 and a real backend."""
    backend = start_backend("in-image")
    docs = render("static")
    config = json.loads(config_of(docs))
    # Two calls of free_port can return one port (it is free again once probed).
    admin_port = free_port()
    listen_port = next(p for p in (free_port() for _ in range(100)) if p != admin_port)
    config["admin"]["address"] = f"{LOCALHOST}:{admin_port}"
    config["listeners"][0]["address"] = f"{LOCALHOST}:{listen_port}"
    for c in config["clusters"]:
        c["endpoints"] = [backend.address]
    pf = pilotfish_container(pod_specs(docs)[0][1])
    path, mount = deployment_config_mount(pod_specs(docs)[0][1])
    d = config_dir(tmp_path, os.path.basename(path), json.dumps(config))
    out, err = open(tmp_path / "image.out", "wb"), open(tmp_path / "image.err", "wb")
    proc = subprocess.Popen(
        [IMAGE_SH, "run", "--volume", f"{d}:{mount['mountPath']}:ro", image.ref,
         *pf["args"]], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        start_new_session=True)
    pids = []
    try:
        def ready():
            if proc.poll() is not None:
                pytest.fail(f"pilotfish in the image exited {proc.returncode}:\n"
                            f"{(tmp_path / 'image.err').read_text()}")
            try:
                return http_request(admin_port, "GET", "/ready", timeout=1.0).status == 200
            except OSError:
                return False

        wait_for(ready, START_TIMEOUT, "pilotfish in the image to answer /ready")
        resp = http_request(listen_port, "GET", "/from-the-image", headers={"Host": "web"})
        assert resp.status == 200, resp
        assert backend.stats()["requests"] >= 1
        if image.engine == "buildah":
            # chroot isolation: the container's processes are ours, in the run's session.
            running = session_processes(proc.pid, "pilotfish")
            assert [uid for _, uid in running] == [UID], running
            pids = [pid for pid, _ in running]
    finally:
        ended = stop_run(proc, pids if image.engine == "buildah" else [])
        out.close()
        err.close()
    log = (tmp_path / "image.err").read_text()
    assert ended, f"pilotfish in the image did not stop on SIGTERM:\n{log}"
    assert "draining signal=SIGTERM" in log, log
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{log}"


# ---- the Deployments the chart and manifests/ render, against the image ----------------


def rendered_pod_specs():
    """[(where, pod spec)] of every documented mode that runs pods, and of manifests/."""
    out = []
    for mode in MODES:
        out += [(f"chart {mode}", spec) for _, spec in pod_specs(render(mode))]
    for name, d in manifests():
        out += [(f"manifests/{name}", spec) for _, spec in pod_specs([d])]
    return out


def check_runs_the_image(image, where, spec):
    """No command (the image's entrypoint runs), the config where the image's CMD reads it
    and mounted there, the image's uid and gid, its exposed ports, and a preStop command
    that the image has (it has no shell)."""
    config = image.config()
    uid, gid = (int(x) for x in config["User"].split(":"))
    exposed = {int(p.split("/")[0]) for p in config["ExposedPorts"]}
    path_dirs = [e.split("=", 1)[1] for e in config["Env"] if e.startswith("PATH=")][0]
    pf = pilotfish_container(spec)
    assert "command" not in pf, f"{where}: command replaces the image's entrypoint"
    assert pf["args"][:2] == config["Cmd"], f"{where}: args {pf['args']}"
    path, mount = deployment_config_mount(spec)
    assert mount["readOnly"] is True, where
    volume = [v for v in spec["volumes"] if v["name"] == mount["name"]][0]
    items = volume["configMap"].get("items")
    assert items is None, f"{where}: the config volume picks items {items}"
    sc = {**spec.get("securityContext", {}), **pf["securityContext"]}
    assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid), where
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, where
    ports = {p["containerPort"] for p in pf["ports"]}
    assert ports <= exposed, f"{where}: ports {ports}, the image exposes {exposed}"
    pre_stop = pf.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if pre_stop:
        program = pre_stop[0]
        found = [program] if program.startswith("/") else \
            [f"{d}/{program}" for d in path_dirs.split(":")]
        assert any(p in image.files() for p in found), f"{where}: preStop {pre_stop} not in image"


def test_deployments_run_the_image_as_it_expects(image):
    specs = rendered_pod_specs()
    assert specs
    for where, spec in specs:
        check_runs_the_image(image, where, spec)


def test_a_users_chart_with_the_sidecar_template_runs_the_image_as_it_expects(
        image, parent_chart):
    """The chart README's example (helm/pilotfish/examples/shop), native and classic."""
    for extra in ([], ["--set", "pilotfish.sidecar.native=false"]):
        text = run([HELM, "template", "web", str(parent_chart), "-n", "shop", *extra]).stdout
        for _, spec in pod_specs(docs_of(text)):
            check_runs_the_image(image, f"examples/shop {extra}", spec)


# ---- the image's pieces, without an engine ---------------------------------------------

ROOTFS_SH = os.path.join(REPO, "packaging", "rootfs.sh")


def test_rootfs_holds_what_the_binary_loads_and_runs_chrooted(tmp_path):
    """packaging/rootfs.sh on this machine's build of pilotfish: the tree it makes runs
    pilotfish as the image's user with nothing from the host."""
    root = tmp_path / "root"
    proc = subprocess.run(["sh", ROOTFS_SH, str(root), PILOTFISH_BIN, "/usr/bin/sleep", "--",
                           "libcurl.so.4"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    target = root / PILOTFISH_BIN.lstrip("/")
    assert target.is_file() and (root / "usr/bin/sleep").is_file()
    assert (root / "etc/passwd").read_text().count(f":{UID}:{UID}:") == 1
    assert not (root / "bin/sh").exists() and not (root / "usr/bin/sh").exists()
    if os.geteuid() != 0:
        pytest.skip("chroot needs root; the tree's contents were checked")
    if is_sanitizer_build():
        pytest.skip("AddressSanitizer reads /proc, which the tree has not; contents checked")
    version = subprocess.run(["chroot", "--userspec", f"{UID}:{UID}", str(root),
                              PILOTFISH_BIN, "--version"], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"pilotfish {pilotfish_version()}"


def test_rootfs_stops_on_a_library_that_is_not_installed(tmp_path):
    proc = subprocess.run(["sh", ROOTFS_SH, str(tmp_path / "root"), "/usr/bin/sleep", "--",
                           "libpilotfish-missing.so.9"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert proc.returncode != 0
    assert "rootfs: libpilotfish-missing.so.9 is not installed" in proc.stderr


def test_an_engine_that_cannot_build_is_not_chosen():
    """A docker or podman command without a daemon or runtime behind it (a client alone)
    is passed over for one that works, and naming it gets a clear error."""
    broken = [e for e in ("docker", "podman") if shutil.which(e) and subprocess.run(
        [e, "info"], capture_output=True, timeout=RUN_TIMEOUT).returncode != 0]
    if not broken:
        pytest.skip("no docker or podman command without a working daemon here")
    chosen = image_sh("engine", check=False).stdout.strip()
    assert chosen not in broken
    for e in broken:
        proc = subprocess.run([IMAGE_SH, "engine"], capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, env=dict(os.environ, PILOTFISH_ENGINE=e))
        assert proc.returncode != 0
        assert f"PILOTFISH_ENGINE={e} does not work here" in proc.stderr
