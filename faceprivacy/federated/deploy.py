"""Run the FedFace Flower apps on Flower's deployment engine (SuperLink + SuperNodes + ``flwr run``).

Process management for local deployments, tests and the ``fed-server``/``fed-client`` commands: every process
gets telemetry and update checks switched off, runtime dependency installation disabled, binds to the given
host (127.0.0.1 by default), runs in its own process group and is stopped (TERM, then KILL) together with
the helper processes Flower spawns under it. Ray / ``flwr[simulation]`` are never involved.

Secure by default (:mod:`faceprivacy.federated.security`): TLS with a generated CA unless certificates are
given, SuperNode authentication with registered keys, the Control API answering only loopback peers, and the
FedFace app pinned by hash on the SuperLink and every SuperNode. ``insecure=True`` (tests only) switches TLS
and node authentication off; the app pin stays.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import FacePrivacyError, InputError

log = logging.getLogger(__name__)

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def source_root() -> Path:
    """The folder that contains this ``faceprivacy`` package (put on PYTHONPATH of Flower's subprocesses)."""
    return Path(__file__).resolve().parents[2]


def flower_env(flwr_home: str | os.PathLike | None = None, extra: Mapping[str, str] | None = None,
               guard_bin: str | os.PathLike | None = None) -> dict:
    """Environment for Flower processes: no telemetry, no update check, no `uv sync`, this checkout first;
    with ``guard_bin`` (:func:`security.write_guard_shims`) first on PATH, Flower's app processes are guarded."""
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if guard_bin is not None:
        env["PATH"] = str(guard_bin) + os.pathsep + env["PATH"]
    pp = [str(source_root())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(pp))
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    if extra:
        env.update(extra)
    return env


def flower_exe(name: str) -> str:
    """Path of a Flower console script installed beside this Python."""
    p = Path(sys.executable).parent / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise FacePrivacyError(f"Flower command {name!r} not found (is flwr installed in this environment?)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """All descendant pids of ``pid`` (from /proc; empty where /proc is unavailable)."""
    kids: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _is_flower_process(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"flwr" in cmd or b"flower" in cmd


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def write_flower_project(dest: str | os.PathLike) -> Path:
    """Write the FedFace Flower App folder (``pyproject.toml``); its components are this package's apps.

    The file is fixed (the recipe's defaults), so the bundle ``flwr run`` builds from it has one hash that
    nodes pin (``security.fedface_app_hash``); a run's own settings go in ``--run-config`` (:func:`write_run_config`).
    """
    from .recipe import FedFaceRecipe

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    lines = [
        "[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', "",
        "[project]", 'name = "fedface"', 'version = "1.0.0"',
        'description = "FedFace (faceprivacy): federated face recognition, one identity per client"',
        'license = "MIT"', "dependencies = []", "",
        "[tool.flwr.app]", 'publisher = "faceprivacy"', "",
        "[tool.flwr.app.components]",
        'serverapp = "faceprivacy.federated.flower_app:server_app"',
        'clientapp = "faceprivacy.federated.flower_app:client_app"', "",
        "[tool.flwr.app.config]",
    ] + [f"{k} = {_toml_value(v)}" for k, v in FedFaceRecipe().to_run_config().items()]
    (dest / "pyproject.toml").write_text("\n".join(lines) + "\n")
    (dest / "README.md").write_text("FedFace app generated by faceprivacy.federated.deploy; components live in "
                                    "the installed faceprivacy package.\n")
    return dest


def write_run_config(dest: str | os.PathLike, run_config: Mapping[str, Any]) -> Path:
    """A run's settings as the TOML file ``flwr run --run-config`` reads (validated as a recipe first)."""
    from .recipe import FedFaceRecipe

    cfg = FedFaceRecipe.from_run_config(dict(run_config)).to_run_config()
    p = Path(dest)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in cfg.items()))
    return p


class RunTimeout(FacePrivacyError):
    """A run that did not finish in time; ``partial`` is its last written result (or None)."""

    def __init__(self, message: str, partial: dict | None) -> None:
        super().__init__(message)
        self.partial = partial


def supernode_command(superlink: str, node_config: Mapping[str, Any], *, insecure: bool = False,
                      root_certificates: str | None = None, key: str | os.PathLike | None = None,
                      host: str = "127.0.0.1", port: int = 0, max_wait: float | None = None) -> list[str]:
    """The ``flower-supernode`` command line of one FedFace node."""
    nc = " ".join(f"{k}={_toml_value(v)}" for k, v in node_config.items())
    if insecure:
        tls = ["--insecure"]
    elif root_certificates:
        tls = ["--root-certificates", str(root_certificates)]
    else:
        tls = []
    return [flower_exe("flower-supernode"), *tls, "--superlink", superlink,
            *(["--auth-supernode-private-key", str(key)] if key else []),
            *(["--max-wait-time", str(float(max_wait))] if max_wait else []),
            "--host", host, "--port", str(port or free_port(host)), "--node-config", nc]


def write_connection(flwr_home: str | os.PathLike, address: str, insecure: bool = True,
                     root_certificates: str | None = None, name: str = "fedface") -> str:
    """Write a Flower CLI config (``$FLWR_HOME/config.toml``) with one SuperLink connection; returns its name."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]", f'address = "{address}"']
    if insecure:
        lines.append("insecure = true")
    if root_certificates:
        lines.append(f"root-certificates = {_toml_value(str(root_certificates))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return name


class LocalFederation:
    """Start/stop a SuperLink and SuperNodes as subprocesses; a context manager that always cleans up.

    Secure by default: TLS (generated CA unless ``ssl`` gives the three files), SuperNode authentication
    (``node_auth``; keys registered with :meth:`register_keys` or made by :meth:`new_node_key`), the Control
    API loopback-only, the FedFace app pinned by hash (``pin_app``) on the SuperLink and on every SuperNode.

    >>> # with LocalFederation(workdir) as fed:
    >>> #     fed.start_superlink(); fed.start_supernode({"partition-id": 0}); fed.run_app(config)
    """

    def __init__(self, workdir: str | os.PathLike, host: str = "127.0.0.1", insecure: bool = False,
                 ssl: Mapping[str, str] | None = None, node_auth: bool = True, pin_app: bool = True) -> None:
        from .security import APP_HASH_ENV, fedface_app_hash, write_guard_shims

        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.insecure = insecure
        self.node_auth = node_auth and not insecure  # Flower's node authentication needs TLS
        self.ssl = {k: str(Path(v).resolve()) for k, v in (ssl or {}).items() if v}
        self.flwr_home = self.workdir / "flwr_home"
        self.app_hash = fedface_app_hash() if pin_app else ""
        self.guard_bin = write_guard_shims(self.workdir / "guard_bin") if pin_app else None
        self.env = flower_env(self.flwr_home, {APP_HASH_ENV: self.app_hash}, self.guard_bin)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.superlink_port: int | None = None
        self.registered: list[str] = []
        self._logs: list[Any] = []

    # -------------------------------------------------------------------------------------------- processes

    def _spawn(self, name: str, cmd: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
        logf = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(logf)
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=dict(env or self.env),
                             cwd=self.workdir, start_new_session=True)
        self.procs.append((name, p))
        log.info("started %s (pid %d): %s", name, p.pid, " ".join(cmd))
        return p

    def _tls_args(self) -> list[str]:
        if self.insecure:
            return ["--insecure"]
        if not self.ssl:
            from .security import ensure_tls

            self.ssl = ensure_tls(self.workdir / "tls", self.host)
        need = ("ssl-certfile", "ssl-keyfile", "ssl-ca-certfile")
        if not all(self.ssl.get(k) for k in need):
            raise InputError("a secure SuperLink needs --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile")
        return [a for k in need for a in (f"--{k}", str(self.ssl[k]))]

    @property
    def ca_certfile(self) -> str | None:
        """The CA nodes verify the SuperLink with (None when insecure)."""
        return None if self.insecure else self.ssl.get("ssl-ca-certfile")

    def start_superlink(self, port: int | None = None, pin_app: bool = True) -> str:
        """Start the guarded SuperLink (Fleet, Control and Runtime APIs on one HTTP port); returns ``host:port``.

        ``pin_app=False`` leaves the server's own app processes unguarded (tests of the node-side pin only).
        """
        self.superlink_port = port or free_port(self.host)
        cmd = [sys.executable, "-m", "faceprivacy.federated.guard", "superlink", *self._tls_args(),
               *(["--enable-supernode-auth"] if self.node_auth else []),
               "--disable-runtime-dependency-installation", "--host", self.host, "--port", str(self.superlink_port)]
        env = self.env if pin_app else flower_env(self.flwr_home)
        self._spawn("superlink", cmd, env)
        self.wait_port(self.host, self.superlink_port)
        write_connection(self.flwr_home, self.address, insecure=self.insecure, root_certificates=self.ca_certfile)
        return self.address

    @property
    def address(self) -> str:
        if self.superlink_port is None:
            raise FacePrivacyError("SuperLink not started")
        return f"{self.host}:{self.superlink_port}"

    def _flwr(self, *args: str, timeout: float = 120.0) -> str:
        res = subprocess.run([flower_exe("flwr"), *args], env=self.env, cwd=self.workdir, capture_output=True,
                             text=True, timeout=timeout)
        out = (res.stdout or "") + (res.stderr or "")
        if res.returncode != 0:
            raise FacePrivacyError(f"flwr {args[0]} {args[1] if len(args) > 1 else ''} failed "
                                   f"(code {res.returncode}): {out[-1500:]}")
        return out

    def register_keys(self, public_keys: list[str]) -> None:
        """Register SuperNode public keys (OpenSSH lines) with the SuperLink (from this host: loopback only)."""
        keydir = self.workdir / "registered_keys"
        keydir.mkdir(exist_ok=True)
        for k in public_keys:
            if k in self.registered:
                continue
            f = keydir / f"node{len(self.registered)}.pub"
            f.write_text(k + "\n")
            self._flwr("supernode", "register", str(f), "fedface")
            self.registered.append(k)

    def new_node_key(self, name: str) -> Path:
        """Make a node key pair under ``workdir/keys`` and register its public key; returns the private key."""
        from .security import generate_node_key

        priv, pub = generate_node_key(self.workdir / "keys" / name)
        self.register_keys([pub.read_text().strip()])
        return priv

    def start_supernode(self, node_config: Mapping[str, Any], port: int | None = None,
                        superlink: str | None = None, key: str | os.PathLike | None = None,
                        name: str | None = None, max_wait: float | None = None) -> subprocess.Popen:
        """Start one SuperNode holding one identity (``partition-id`` or ``image-dir`` in ``node_config``).

        With node authentication and no ``key``, a new key is made and registered for it.
        """
        name = name or f"supernode{sum(1 for n, _ in self.procs if n.startswith('supernode'))}"
        if self.node_auth and key is None:
            key = self.new_node_key(name)
        cmd = supernode_command(superlink or self.address, node_config, insecure=self.insecure,
                                root_certificates=self.ca_certfile, key=key, host=self.host,
                                port=port or free_port(self.host), max_wait=max_wait)
        return self._spawn(name, cmd)

    def wait_port(self, host: str, port: int, timeout: float = 60.0) -> None:
        """Wait until something listens on ``host:port`` (fails early if a managed process died)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.check_alive()
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                return
            time.sleep(0.2)
        raise FacePrivacyError(f"nothing listens on {host}:{port} after {timeout:.0f} s")

    def check_alive(self, names: tuple[str, ...] = ("superlink",)) -> None:
        """Raise with the log tail if one of the ``names`` processes exited."""
        for name, p in self.procs:
            if name in names and p.poll() is not None:
                raise FacePrivacyError(f"{name} exited with code {p.returncode}: {self.log_tail(name)}")

    def log_tail(self, name: str, n: int = 1500) -> str:
        """The last characters of a managed process's log."""
        f = self.workdir / f"{name}.log"
        return f.read_text(errors="replace")[-n:] if f.exists() else ""

    # -------------------------------------------------------------------------------------------- runs

    def submit(self, run_config: Mapping[str, Any], timeout: float = 120.0, app: str | os.PathLike | None = None) -> str:
        """Submit a run with ``flwr run`` (the FedFace app, or ``app``); returns Flower's output."""
        app_dir = Path(app) if app is not None else write_flower_project(self.workdir / "app")
        args = ["run", str(app_dir), "fedface"]
        if app is None:
            args += ["--run-config", str(write_run_config(self.workdir / "run_config.toml", run_config))]
        out = self._flwr(*args, timeout=timeout)
        if "Successfully started run" not in out:
            raise FacePrivacyError(f"flwr run did not start a run: {out[-1500:]}")
        log.info("%s", out.strip().splitlines()[-1])
        return out

    def run_status(self, run_id: str) -> dict:
        """Flower's record of a run (``flwr ls --run-id``): status, details, timings; {} if unavailable."""
        import json

        try:
            out = self._flwr("ls", "fedface", "--run-id", str(run_id), "--format", "json", timeout=30)
            return json.loads(out[out.index("{"):])["runs"][0]
        except (FacePrivacyError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired):
            return {}

    def run_app(self, run_config: Mapping[str, Any], timeout: float = 600.0,
                on_progress: Any = None) -> dict:
        """Submit a FedFace run and wait for its complete ``flower_result.json``; returns it.

        ``on_progress(line)`` is called with every new per-round progress line. Raises :class:`RunTimeout`
        (carrying the partial result, if any round finished) after ``timeout`` seconds.
        """
        import json

        cfg = dict(run_config)
        out_dir = Path(cfg.get("out-dir") or (self.workdir / "out"))
        cfg["out-dir"] = str(out_dir)
        result = out_dir / "flower_result.json"
        progress = out_dir / "progress.jsonl"
        for f in (result, progress):
            f.unlink(missing_ok=True)
        out = self.submit(cfg)
        run_id = out.split("Successfully started run", 1)[1].split()[0].strip() if "started run" in out else ""
        t0 = time.monotonic()
        seen = 0
        polls = 0
        while True:
            polls += 1
            if run_id and polls % 20 == 0:  # every ~10 s: did the ServerApp fail?
                status = self.run_status(run_id)
                st = str(status.get("status", ""))
                if st.startswith("finished") and st != "finished:completed":
                    raise FacePrivacyError(f"the run ended ({status.get('status')}): "
                                           f"{status.get('status-details', '')}")
            if progress.exists() and on_progress is not None:
                lines = progress.read_text().splitlines()
                for line in lines[seen:]:
                    with contextlib.suppress(ValueError):
                        on_progress(json.loads(line))
                seen = len(lines)
            if result.exists():
                with contextlib.suppress(ValueError):
                    res = json.loads(result.read_text())
                    if res.get("complete"):
                        return res
            if time.monotonic() - t0 > timeout:
                partial = None
                with contextlib.suppress(OSError, ValueError):
                    partial = json.loads(result.read_text())
                raise RunTimeout(f"the run did not finish within {timeout:.0f} s", partial)
            self.check_alive()
            time.sleep(0.5)

    # -------------------------------------------------------------------------------------------- cleanup

    def stop(self, grace: float = 8.0) -> None:
        """Stop every managed process and the helpers Flower spawned under them (TERM, then KILL)."""
        victims: list[int] = []
        for _, p in self.procs:
            if p.poll() is None:
                victims += _children(p.pid)
        for _, p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGTERM)
        t0 = time.monotonic()
        for _, p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, grace - (time.monotonic() - t0)))
        for name, p in self.procs:
            if p.poll() is None:
                log.warning("%s (pid %d) ignored SIGTERM; killing", name, p.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        for pid in victims:  # helpers (SuperExec, app processes) that may have left the process group
            if _is_flower_process(pid):  # guard against a recycled pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for f in self._logs:
            f.close()
        self._logs.clear()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
