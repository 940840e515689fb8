"""Guarded entry points of Flower's processes (see :mod:`faceprivacy.federated.security`).

* ``main("clientapp")`` / ``main("serverapp")``: Flower's ``flwr-clientapp`` / ``flwr-serverapp`` with one
  change: the app bundle is checked against ``$FACEPRIVACY_APP_SHA256`` before it is unpacked; another bundle
  raises, and Flower answers the server with an error reply. No code of a foreign app runs.
* ``main("refuse")``: the other app kinds (agent, connector, model, simulation) never run on a FedFace node.
* ``superlink()``: ``flower-superlink`` whose Control API (run submission, node registration, logs) answers
  only loopback peers, so only the operator's machine can start runs or register nodes, while the Fleet API
  on the same port serves the nodes.
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import os
import sys
from typing import Any

from .security import APP_HASH_ENV

CONTROL_PREFIX = "/v1/control/"


class ForeignAppError(RuntimeError):
    """An app bundle whose hash is not the pinned FedFace app's."""


def _pinned_install(install: Any, expected: str) -> Any:
    def install_from_fab(fab_file: Any, *args: Any, **kwargs: Any) -> Any:
        data = fab_file if isinstance(fab_file, bytes) else open(fab_file, "rb").read()  # noqa: SIM115
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            print(f"faceprivacy guard: refused app bundle sha256 {got[:16]}… (this node runs only the FedFace "
                  f"app {expected[:16]}…)", file=sys.stderr, flush=True)
            raise ForeignAppError(f"app bundle {got[:16]} is not the pinned FedFace app")
        return install(fab_file, *args, **kwargs)

    return install_from_fab


def main(role: str) -> int:
    """Run Flower's app process ``role`` with the bundle pinned by hash (or refuse it)."""
    expected = os.environ.get(APP_HASH_ENV, "").strip().lower()
    if role == "refuse" or not expected:
        print(f"faceprivacy guard: refused to start {os.path.basename(sys.argv[0])} "
              f"({'no pinned app hash' if role != 'refuse' else 'not a FedFace app process'})",
              file=sys.stderr, flush=True)
        return 3
    # the packages re-export functions named like these modules: take the modules from importlib
    if role == "clientapp":
        from flwr.supernode.cli import flwr_clientapp

        mod = importlib.import_module("flwr.supernode.runtime.run_clientapp")
        mod.install_from_fab = _pinned_install(mod.install_from_fab, expected)
        return flwr_clientapp() or 0
    if role == "serverapp":
        from flwr.superlink.cli import flwr_serverapp

        mod = importlib.import_module("flwr.superlink.runtime.run_serverapp")
        mod.install_from_fab = _pinned_install(mod.install_from_fab, expected)
        return flwr_serverapp() or 0
    raise SystemExit(f"unknown guard role {role!r}")


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 peers (never for an unknown peer)."""
    try:
        return bool(host) and ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False


class LoopbackControlOnly:
    """ASGI middleware: requests to the Control API from a non-loopback peer get 403."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and str(scope.get("path", "")).startswith(CONTROL_PREFIX):
            client = scope.get("client")
            if not is_loopback(client[0] if client else None):
                body = b'{"detail":"the Control API of this FedFace SuperLink answers only its own host"}'
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def superlink() -> int:
    """``flower-superlink`` with :class:`LoopbackControlOnly` in front of its Control API."""
    from flwr.superlink import extensions
    from flwr.superlink.cli import flower_superlink
    from starlette.middleware import Middleware

    original = extensions.get_middleware
    extensions.get_middleware = lambda: (Middleware(LoopbackControlOnly), *original())  # type: ignore[assignment]
    sys.argv[0] = "flower-superlink"
    return flower_superlink() or 0


if __name__ == "__main__":  # python -m faceprivacy.federated.guard superlink ARGS...
    if len(sys.argv) > 1 and sys.argv[1] == "superlink":
        del sys.argv[1]
        sys.exit(superlink())
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "refuse"))
