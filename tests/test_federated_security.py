"""Secure defaults of the FedFace deployment: the attacks of issue 15 now fail (loopback only)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
import torch

pytest.importorskip("flwr")

from faceprivacy.core.errors import InputError  # noqa: E402
from faceprivacy.federated.recipe import FedFaceRecipe  # noqa: E402

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------ recipe


def test_recipe_round_trips_and_refuses_typos():
    r = FedFaceRecipe(geometry="euclidean", server_opt="adam", server_lr=1e-5, num_server_rounds=7)
    assert FedFaceRecipe.from_run_config(r.to_run_config()) == r
    with pytest.raises(InputError, match="geometry"):
        FedFaceRecipe.from_run_config({"geometry": "euclidian"})
    with pytest.raises(InputError, match="unknown run-config keys"):
        FedFaceRecipe.from_run_config({"not-a-key": 1})
    with pytest.raises(InputError, match="expected int"):
        FedFaceRecipe.from_run_config({"num-server-rounds": "many"})
    with pytest.raises(InputError, match="dp-noise needs dp-clip"):
        FedFaceRecipe(dp_noise=1.0)
    assert FedFaceRecipe().max_update_norm > 0  # server clipping on by default


# ------------------------------------------------------------------------------------------------ DP noise


def test_server_cannot_regenerate_the_dp_noise():
    """Same seed, round and node: the noise differs (OS CSPRNG), and the seed's own stream does not remove it."""
    from faceprivacy.federated.algorithm import ClientConfig, client_update, head_vector, init_class_embedding
    from faceprivacy.federated.synthetic import synthetic_clients, tiny_head

    feats, _ = synthetic_clients(1, 10, dim=64, seed=3)
    head = tiny_head()
    vec = head_vector(head)
    w = init_class_embedding(head, feats[0])
    cfg = ClientConfig(local_steps=2, lr=0.1, dp_clip=1.0, dp_noise=1.0)
    clean = client_update(head, vec, feats[0], w, ClientConfig(local_steps=2, lr=0.1, dp_clip=1.0), seed=7)
    a = client_update(head, vec, feats[0], w, cfg, seed=7)
    b = client_update(head, vec, feats[0], w, cfg, seed=7)
    assert not torch.allclose(a.delta, b.delta)
    # the old attack: regenerate N(0, (sigma C)^2) from the seed the server knows and subtract it
    gen = torch.Generator().manual_seed(7)
    torch.randperm(10, generator=gen)
    guess = torch.randn(a.delta.shape, generator=gen) * 1.0
    residual = float((a.delta - guess - clean.delta).norm())
    assert residual > 0.5 * float((a.delta - clean.delta).norm())


def test_accountant_matches_the_closed_form():
    from faceprivacy.federated.privacy import _rdp_closed_form, epsilon

    for sigma, k in [(0.5, 10), (1.0, 10), (2.0, 60)]:
        assert epsilon(sigma, k, 1e-5) == pytest.approx(_rdp_closed_form(sigma, k, 1e-5), rel=0.01)
    assert epsilon(1.0, 20) > epsilon(1.0, 10) > epsilon(2.0, 10)
    assert epsilon(0.0, 3) == float("inf") and epsilon(1.0, 0) == 0.0


# ------------------------------------------------------------------------------------------------ guard


def test_guard_refuses_a_bundle_with_another_hash():
    from faceprivacy.federated.guard import ForeignAppError, _pinned_install

    ok = b"fedface bundle"
    calls = []
    install = _pinned_install(lambda fab, *a, **k: calls.append(fab) or "installed", hashlib.sha256(ok).hexdigest())
    assert install(ok, skip_prompt=True) == "installed"
    with pytest.raises(ForeignAppError):
        install(b"someone else's app")
    assert calls == [ok]  # the foreign bundle was never unpacked


def test_fedface_app_hash_is_deterministic():
    from faceprivacy.federated.security import fedface_app_hash

    assert fedface_app_hash() == fedface_app_hash()


def test_control_api_answers_only_loopback_peers():
    from faceprivacy.federated.guard import LoopbackControlOnly

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = LoopbackControlOnly(app)

    def status(path, host):
        sent = []

        async def send(msg):
            sent.append(msg)

        asyncio.run(guard({"type": "http", "path": path, "client": (host, 5000)}, None, send))
        return sent[0]["status"]

    assert status("/v1/control/start-run", "127.0.0.1") == 200
    assert status("/v1/control/start-run", "::1") == 200
    assert status("/v1/control/start-run", "192.0.2.7") == 403
    assert status("/v1/control/register-node", "10.0.0.2") == 403
    assert status("/v1/fleet/pull-messages", "192.0.2.7") == 200  # nodes still reach the Fleet API


def test_tls_material_and_node_keys(tmp_path):
    from cryptography import x509

    from faceprivacy.federated.security import (
        check_tls_files,
        ensure_tls,
        generate_node_key,
        read_authorized_keys,
    )

    tls = ensure_tls(tmp_path / "tls", "127.0.0.1")
    assert ensure_tls(tmp_path / "tls", "127.0.0.1") == tls  # reused, not replaced
    cert = x509.load_pem_x509_certificate(open(tls["ssl-certfile"], "rb").read())
    ca = x509.load_pem_x509_certificate(open(tls["ssl-ca-certfile"], "rb").read())
    cert.verify_directly_issued_by(ca)
    assert oct((tmp_path / "tls" / "server.key").stat().st_mode)[-3:] == "600"
    with pytest.raises(InputError, match="all of"):
        check_tls_files({"ssl-certfile": tls["ssl-certfile"], "ssl-keyfile": None, "ssl-ca-certfile": None})
    _, pub = generate_node_key(tmp_path / "node0")
    (tmp_path / "authorized_keys").write_text("# nodes\n" + pub.read_text())
    assert len(read_authorized_keys(tmp_path / "authorized_keys")) == 1
    (tmp_path / "bad").write_text("ssh-rsa AAAA\n")
    with pytest.raises(InputError):
        read_authorized_keys(tmp_path / "bad")


# ------------------------------------------------------------------------------------------------ network


def _recipe(tmp_path, **kw):
    return FedFaceRecipe(num_server_rounds=2, min_train_nodes=2, min_available_nodes=2, lr=0.5, local_steps=2,
                         out_dir=str(tmp_path / "out"), **kw).to_run_config()


@pytest.mark.network
def test_secure_deployment_trains_and_refuses_unregistered_nodes(tmp_path):
    """TLS + node authentication by default: two registered nodes train; a stranger's key and no key fail."""
    from faceprivacy.federated.deploy import LocalFederation
    from faceprivacy.federated.security import generate_node_key

    with LocalFederation(tmp_path / "fed") as fed:
        fed.start_superlink()
        stranger_key, _ = generate_node_key(tmp_path / "stranger")  # never registered
        stranger = fed.start_supernode({"partition-id": 5}, key=stranger_key, name="stranger", max_wait=10)
        for i in range(2):
            fed.start_supernode({"partition-id": i})
        lines = []
        summary = fed.run_app(_recipe(tmp_path), timeout=240, on_progress=lines.append)
        t0 = time.monotonic()
        while stranger.poll() is None and time.monotonic() - t0 < 30:
            time.sleep(0.5)
    assert stranger.returncode not in (None, 0)
    assert "Failed to activate SuperNode" in (tmp_path / "fed" / "stranger.log").read_text()
    assert "No SuperNode found with the given public key" in (tmp_path / "fed" / "superlink.log").read_text()
    assert all(p.poll() is not None for _, p in fed.procs)
    assert summary["complete"] and summary["num_rounds"] == 2 and summary["model_change_l2"] > 1e-4
    assert [r["accepted"] for r in summary["rounds"]] == [2, 2] and len(summary["nodes"]) == 2
    assert [ln["round"] for ln in lines] == [1, 2]
    assert (tmp_path / "out" / "flower_head.npz").exists()


FOREIGN_APP = '''
import os, time
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client_app = ClientApp()
server_app = ServerApp()


@client_app.train()
def train(msg, context):
    open(os.path.join(context.run_config["marker-dir"], "client_ran"), "w").write("pwned")
    return Message(RecordDict(), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    d = context.run_config["marker-dir"]
    open(os.path.join(d, "server_ran"), "w").write("1")
    ids = []
    for _ in range(60):
        ids = list(grid.get_node_ids())
        if ids:
            break
        time.sleep(0.5)
    msgs = [Message(RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=n, message_type="train") for n in ids]
    replies = list(grid.send_and_receive(msgs, timeout=90))
    open(os.path.join(d, "replies"), "w").write(" ".join("error" if r.has_error() else "ok" for r in replies))
'''


@pytest.mark.network
def test_foreign_app_is_not_executed_on_a_node(tmp_path):
    """A foreign app that reached a node (here: through an unpinned server) is refused before it unpacks."""
    from faceprivacy.federated.deploy import LocalFederation

    app, marks = _write_foreign_app(tmp_path)
    with LocalFederation(tmp_path / "fed", insecure=True) as fed:
        fed.start_superlink(pin_app=False)  # the server side lets it through; the node must not
        fed.start_supernode({"partition-id": 0})
        fed.submit({}, app=app)
        t0 = time.monotonic()
        while not (marks / "replies").exists() and time.monotonic() - t0 < 150:
            fed.check_alive()
            time.sleep(0.5)
        node_log = fed.log_tail("supernode0", 20000)
    assert (marks / "server_ran").exists()
    assert (marks / "replies").read_text() == "error"
    assert not (marks / "client_ran").exists()
    assert "refused app bundle" in node_log


def _write_foreign_app(tmp_path):
    app = tmp_path / "foreign"
    app.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    (app / "evil_app.py").write_text(FOREIGN_APP)
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "notfedface"\nversion = "1.0.0"\ndescription = ""\nlicense = "MIT"\ndependencies = []\n\n'
        '[tool.flwr.app]\npublisher = "someone"\n\n[tool.flwr.app.components]\n'
        'serverapp = "evil_app:server_app"\nclientapp = "evil_app:client_app"\n\n'
        f'[tool.flwr.app.config]\nmarker-dir = "{marks}"\n')
    return app, marks


@pytest.mark.network
def test_pinned_server_does_not_run_a_foreign_app(tmp_path):
    """``flwr run`` of another app on the operator's own host: the ServerApp refuses it before unpacking."""
    import json

    from faceprivacy.federated.deploy import LocalFederation

    app, marks = _write_foreign_app(tmp_path)
    with LocalFederation(tmp_path / "fed", insecure=True) as fed:
        fed.start_superlink()
        fed.submit({}, app=app)
        t0 = time.monotonic()
        run: dict = {}
        while time.monotonic() - t0 < 90:
            out = fed._flwr("ls", "fedface", "--format", "json")
            run = json.loads(out[out.index("{"):])["runs"][0]
            if run["status"].startswith("finished"):
                break
            time.sleep(1)
    assert run["status"] == "finished:failed"
    assert "is not the pinned FedFace app" in run["status-details"]
    assert not (marks / "server_ran").exists()


@pytest.mark.network
def test_fed_server_sigterm_ends_flower_processes_and_frees_the_port(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    from faceprivacy.federated.deploy import flower_env, free_port

    port = free_port()
    env = flower_env()
    p = subprocess.Popen([sys.executable, "-m", "faceprivacy", "fed-server", "--port", str(port), "--rounds", "2",
                          "--backbone", "tiny", "--out", str(tmp_path / "srv"), "--create-node-keys", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    lines = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:  # start-up is slow on a loaded machine
        line = p.stdout.readline()
        lines.append(line)
        if "SuperLink on" in line or not line:
            break
    assert any("SuperLink on" in ln for ln in lines), "".join(lines)
    assert "TLS, node authentication" in "".join(lines)

    def superlinks() -> list[int]:
        found = []
        for d in os.listdir("/proc"):
            try:
                cmd = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"superlink" in cmd and str(port).encode() in cmd:
                found.append(int(d))
        return found

    assert superlinks()
    p.send_signal(signal.SIGTERM)
    rest = p.communicate(timeout=60)[0]
    assert p.returncode == 130 and "stopped" in rest
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
    assert superlinks() == []


@pytest.mark.network
def test_fed_client_exits_when_the_superlink_is_gone(tmp_path):
    import subprocess
    import sys

    from faceprivacy.federated.deploy import flower_env, free_port

    port = free_port()  # nothing listens: the run is over (or never started)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "faceprivacy", "fed-client", "--superlink", f"127.0.0.1:{port}",
                          "--partition-id", "0", "--insecure", "--max-wait", "3"],
                         capture_output=True, text=True, timeout=120, env=flower_env(extra={"HOME": str(tmp_path)}))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the run is over" in res.stdout and time.monotonic() - t0 < 90
