"""Build and start the Phoenix sample app (``examples/shop``) on a real PostgreSQL.

The libraries come from a local folder of their sources when there is one (Hex is
not asked: path dependencies with ``override: true``, and the Hex archive built from
source so mix can read the libraries' own ``mix.exs``), from Hex otherwise::

    with postgres_cluster() as db, start_shop(db) as shop:
        shop.url, shop.node.name

The build goes to ``$XDG_CACHE_HOME/elixirscope/samples/shop-<hash>/``, once per
version of the app's sources, the libraries and the Elixir toolchain.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from elixirscope.postgres_cluster import PostgresCluster, free_loopback_port
from elixirscope.sample_nodes import (
    BeamNode,
    SampleCompileError,
    SampleNodeError,
    examples_dir,
    executable,
    file_lock,
    launch_node,
    samples_cache_root,
)

__all__ = ["PhoenixUnavailable", "ShopNode", "build_shop", "elixir_deps_dir", "start_shop"]

_BUILD_TIMEOUT = 900.0
_CACHE_FORMAT = "1"
_DEPS_ENV = "ELIXIRSCOPE_ELIXIR_DEPS"


class PhoenixUnavailable(SampleNodeError):
    """Neither a local folder of the libraries nor Hex can provide Phoenix."""


@dataclass(frozen=True)
class ShopNode:
    node: BeamNode
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ShopNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.node.stop()


def elixir_deps_dir() -> Path | None:
    """The folder of library sources (``deps/<name>`` and ``hex/``), or None.

    ``ELIXIRSCOPE_ELIXIR_DEPS`` names it; otherwise ``shared/elixir-deps`` beside the
    source checkout is used when it exists.
    """
    given = os.environ.get(_DEPS_ENV)
    candidates = [Path(given)] if given else []
    with contextlib.suppress(SampleNodeError):
        candidates.append(examples_dir().resolve().parents[1] / "shared" / "elixir-deps")
    for candidate in candidates:
        if (candidate / "deps" / "phoenix" / "mix.exs").is_file():
            return candidate
    return None


def _digest(app_dir: Path, deps: Path | None) -> str:
    digest = hashlib.sha256(f"elixirscope-shop {_CACHE_FORMAT}\0".encode())
    for tool in ("elixir", "mix", "erl"):
        real = os.path.realpath(executable(tool))
        stat = os.stat(real)
        digest.update(f"{tool}={real}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    for path in sorted(app_dir.rglob("*")):
        if path.is_file() and "_build" not in path.parts and "deps" not in path.parts:
            digest.update(path.relative_to(app_dir).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    if deps is not None:
        versions = deps / "VERSIONS"
        digest.update(versions.read_bytes() if versions.exists() else str(deps).encode())
    return digest.hexdigest()[:16]


def _mix(args: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run([executable("mix"), *args], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                errors="replace", timeout=_BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SampleCompileError(f"{what} took longer than {_BUILD_TIMEOUT:.0f} s.") from exc
    if result.returncode != 0:
        raise SampleCompileError(f"{what} failed (mix exited with status {result.returncode}).",
                                 result.stdout + result.stderr)


def build_shop(cache_dir: Path | None = None) -> list[Path]:
    """Compile the shop and its libraries once; the ``ebin`` directories to load."""
    app_dir = examples_dir() / "shop"
    deps = elixir_deps_dir()
    root = cache_dir or samples_cache_root()
    key = f"shop-{_digest(app_dir, deps)}"
    final = root / key
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{key}.lock"):
        if not (final / "built").exists():
            shutil.rmtree(final, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
            try:
                _build(app_dir, deps, staging)
                (staging / "built").touch()
                staging.rename(final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    ebins = sorted((final / "app" / "_build" / "prod" / "lib").glob("*/ebin"))
    if not any(path.parent.name == "phoenix" for path in ebins):
        raise SampleCompileError(f"The shop build in {final} has no Phoenix in it.")
    return ebins


def _build(app_dir: Path, deps: Path | None, staging: Path) -> None:
    app = staging / "app"
    shutil.copytree(app_dir, app, ignore=shutil.ignore_patterns("_build", "deps"))
    env = {**os.environ, "MIX_HOME": str(staging / "mix_home"), "MIX_ENV": "prod",
           "HEX_HOME": str(staging / "hex_home")}
    if deps is not None:
        env |= {"HEX_OFFLINE": "1", "SHOP_DEPS_DIR": str(deps / "deps")}
        hex_src = staging / "hex"
        shutil.copytree(deps / "hex", hex_src)
        _mix(["archive.build", "-o", "hex.ez"], hex_src, env, "Building the Hex archive")
        _mix(["archive.install", "hex.ez", "--force"], hex_src, env,
             "Installing the Hex archive")
    else:
        env.pop("SHOP_DEPS_DIR", None)
        try:
            _mix(["local.hex", "--force"], app, env, "Installing Hex")
            _mix(["deps.get"], app, env, "Fetching the shop's libraries from Hex")
        except SampleCompileError as exc:
            raise PhoenixUnavailable(
                "The Phoenix sample needs its libraries: Hex is not reachable and no local "
                f"folder of their sources was found (set {_DEPS_ENV})."
            ) from exc
    _mix(["compile"], app, env, "Compiling the shop sample")


def _elixir_keyword(options: dict[str, object]) -> str:
    parts = []
    for key, value in options.items():
        rendered = f'"{value}"' if isinstance(value, str) else str(value)
        parts.append(f"{key}: {rendered}")
    return "[" + ", ".join(parts) + "]"


def start_shop(db: PostgresCluster, *, faults: bool = False, price_tick_ms: int = 0,
               name_prefix: str = "shop", cookie: str | None = None,
               timeout: float = 120) -> ShopNode:
    """Start the shop on a fresh node, against ``db``, serving HTTP on a free port.

    ``faults`` switches on its injected faults (N+1, slow search, slow checkout);
    ``price_tick_ms`` makes its background job change a price that often.
    """
    ebins = build_shop()
    port = free_loopback_port()
    start = (f":ok = Shop.start(port: {port}, db: {_elixir_keyword(db.connect_options)}, "
             f"faults: {'true' if faults else 'false'}, price_tick_ms: {int(price_tick_ms)})")
    node = launch_node("elixir", app="shop", name_prefix=name_prefix, cookie=cookie,
                       longnames=False, code_paths=ebins, start=start,
                       extra_args=("--erl", "+zdbbl 32768"), timeout=timeout)
    return ShopNode(node=node, port=port)
