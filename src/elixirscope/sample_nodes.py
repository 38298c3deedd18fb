"""Start the bundled sample apps (and bare nodes) as real BEAM nodes.

Tests and ``elixirscope demo`` use this to get a node to attach to::

    with start_sample("bank", workload=True) as node:
        scope = elixirscope.attach(node.name, node.cookie)

Every node gets a fresh name and (unless given) a random cookie. The VM reads
the cookie from a private, short-lived ``$HOME/.erlang.cookie``, so it never
shows on a command line. A node halts when its standard input closes, which
happens at the latest when the Python process that started it dies: nodes
never outlive their parent.

The sample apps are compiled once per source version (``elixirc``/``erlc``)
into ``$XDG_CACHE_HOME/elixirscope/samples/<app>-<hash>/ebin``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from elixirscope.errors import ElixirScopeError

__all__ = [
    "BeamNode",
    "NodeStartError",
    "SampleCompileError",
    "SampleNodeError",
    "compile_sample",
    "examples_dir",
    "executable",
    "file_lock",
    "launch_node",
    "samples_cache_root",
    "start_bare",
    "start_sample",
]

SampleApp = Literal["bank", "kv", "shop"]
NodeKind = Literal["erl", "elixir"]

_READY_MARKER = "ELIXIRSCOPE-NODE-READY"
_OUTPUT_LIMIT = 1 << 20
_OUTPUT_TAIL_LINES = 60
_COMPILE_TIMEOUT = 300.0
# Bumped when the way the cache is built changes, so old entries are not reused.
_CACHE_FORMAT = "2"
_NAME_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


class SampleNodeError(ElixirScopeError):
    """A sample app could not be built or a node could not be started.

    ``output`` holds what the compiler or the node printed.
    """

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(_with_output(message, output))
        self.output = output


class SampleCompileError(SampleNodeError):
    """``elixirc`` or ``erlc`` rejected a sample app's sources."""


class NodeStartError(SampleNodeError):
    """A node exited or did not report ready in time."""


def _with_output(message: str, output: str) -> str:
    if not output.strip():
        return message
    tail = "\n".join(output.rstrip().splitlines()[-_OUTPUT_TAIL_LINES:])
    return f"{message}\n--- output ---\n{tail}"


# --------------------------------------------------------------------------- paths


def examples_dir() -> Path:
    """The directory holding the sample apps (``bank/``, ``kv/``).

    In an installed wheel it is ``elixirscope/_examples``; in a source
    checkout it is ``examples/`` at the repository root.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "_examples", package.parents[1] / "examples"):
        if (candidate / "bank").is_dir() and (candidate / "kv").is_dir():
            return candidate
    raise SampleNodeError(
        "The sample apps were not found: neither the installed package nor a "
        "source checkout has an examples directory."
    )


def samples_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "elixirscope" / "samples"


def executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SampleNodeError(
            f"`{name}` is not on PATH; install Erlang/OTP and Elixir (./dev setup does)."
        )
    return path


# --------------------------------------------------------------------------- compiling


@dataclass(frozen=True)
class _AppSpec:
    name: str
    language: Literal["elixir", "erlang"]
    patterns: tuple[str, ...]
    tools: tuple[str, ...]


_APPS: dict[str, _AppSpec] = {
    "bank": _AppSpec("bank", "elixir", ("lib/**/*.ex",), ("elixirc", "elixir", "erl")),
    "kv": _AppSpec("kv", "erlang", ("src/*.erl", "src/kv.app.src"), ("erlc", "erl")),
}

# What mix.exs's application/0 says; elixirc does not write .app files.
_BANK_APP = (
    '{{application,bank,[{{description,"Sample bank for ElixirScope"}},'
    '{{vsn,"0.1.0"}},{{modules,[{modules}]}},{{registered,[]}},'
    "{{applications,[kernel,stdlib,elixir,logger]}},"
    "{{mod,{{'Elixir.Bank.Application',[]}}}}]}}.\n"
)
_MODULES_RE = re.compile(r"\{\s*modules\s*,\s*\[\s*\]\s*\}")


def _spec(app: str) -> _AppSpec:
    try:
        return _APPS[app]
    except KeyError:
        known = ", ".join(sorted(_APPS))
        raise ValueError(f"unknown sample app {app!r} (known: {known})") from None


def _source_files(app_dir: Path, spec: _AppSpec) -> list[Path]:
    files = sorted({path for pattern in spec.patterns for path in app_dir.glob(pattern)})
    if not files:
        raise SampleNodeError(f"The {spec.name} sample has no source files in {app_dir}.")
    return files


def _source_digest(app_dir: Path, files: Sequence[Path], spec: _AppSpec) -> str:
    digest = hashlib.sha256(f"elixirscope-samples {_CACHE_FORMAT}\0".encode())
    for tool in spec.tools:
        real = os.path.realpath(executable(tool))
        stat = os.stat(real)
        digest.update(f"{tool}={real}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    for path in files:
        digest.update(path.relative_to(app_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def compile_sample(
    app: SampleApp, *, examples: Path | None = None, cache_dir: Path | None = None
) -> Path:
    """Compile a sample app (once per source version) and return its ``ebin`` directory.

    Safe to call from several processes at once: one compiles, the others
    wait for it and reuse the result.
    """
    spec = _spec(app)
    app_dir = (examples or examples_dir()) / spec.name
    files = _source_files(app_dir, spec)
    key = f"{spec.name}-{_source_digest(app_dir, files, spec)}"
    root = cache_dir or samples_cache_root()
    final = root / key
    if final.is_dir():
        return final / "ebin"
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{key}.lock"):
        if final.is_dir():
            return final / "ebin"
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            _build(spec, app_dir, files, staging / "ebin")
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final / "ebin"


def _build(spec: _AppSpec, app_dir: Path, files: Sequence[Path], ebin: Path) -> None:
    ebin.mkdir()
    if spec.language == "elixir":
        command = [executable("elixirc"), "-o", str(ebin), *map(str, files)]
    else:
        erl_files = [str(path) for path in files if path.suffix == ".erl"]
        # With debug info, as rebar3 and mix build by default (code analysis reads it).
        command = [executable("erlc"), "+debug_info", "-o", str(ebin), *erl_files]
    try:
        result = subprocess.run(
            command,
            cwd=app_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_COMPILE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SampleCompileError(
            f"Compiling the {spec.name} sample took longer than {_COMPILE_TIMEOUT:.0f} s."
        ) from exc
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SampleCompileError(
            f"Compiling the {spec.name} sample failed ({Path(command[0]).name} exited "
            f"with status {result.returncode}).",
            output,
        )
    modules = sorted(path.stem for path in ebin.glob("*.beam"))
    module_list = ",".join(_erl_atom(module) for module in modules)
    if spec.name == "bank":
        app_file = _BANK_APP.format(modules=module_list)
    else:
        source = (app_dir / "src" / f"{spec.name}.app.src").read_text()
        filled = f"{{modules,[{module_list}]}}"
        app_file, count = _MODULES_RE.subn(lambda _match: filled, source, count=1)
        if count != 1:
            raise SampleCompileError(
                f"{spec.name}.app.src must contain `{{modules, []}}` for the launcher to fill in."
            )
    (ebin / f"{spec.name}.app").write_text(app_file)


def _erl_atom(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --------------------------------------------------------------------------- nodes


class _OutputPump:
    """Drains a node's stdout in a thread, keeps the most recent output, spots the ready line."""

    def __init__(self, stream: IO[bytes], marker: str) -> None:
        self._stream = stream
        self._marker = marker
        self._lines: deque[str] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self.node_name: str | None = None
        self.eof = False
        self.settled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beam-node-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", "replace")
                if self.node_name is None and line.startswith(self._marker):
                    self.node_name = line[len(self._marker) :].strip() or None
                    self.settled.set()
                with self._lock:
                    self._lines.append(line)
                    self._size += len(line)
                    while self._size > _OUTPUT_LIMIT and len(self._lines) > 1:
                        self._size -= len(self._lines.popleft())
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                self._stream.close()
            self.eof = True
            self.settled.set()

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


class BeamNode:
    """A BEAM node started by this process. Use it as a context manager, or call ``stop()``."""

    def __init__(
        self,
        *,
        name: str,
        cookie: str,
        kind: NodeKind,
        app: SampleApp | None,
        process: subprocess.Popen[bytes],
        pump: _OutputPump,
        startup_seconds: float,
    ) -> None:
        self.name = name
        self.cookie = cookie
        self.kind = kind
        self.app = app
        self.startup_seconds = startup_seconds
        self._process = process
        self._pump = pump
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _terminate, process)

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self._process.returncode}"
        return f"<BeamNode {self.name} os_pid={self.os_pid} {state} cookie=<hidden>>"

    def __enter__(self) -> BeamNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def short_name(self) -> str:
        """The part before ``@``."""
        return self.name.partition("@")[0]

    @property
    def host(self) -> str:
        return self.name.partition("@")[2]

    @property
    def os_pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    @property
    def output(self) -> str:
        """What the node printed on stdout and stderr (the last megabyte or so)."""
        return self._pump.text()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the node to exit; its exit status, or None if it is still running."""
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10) -> None:
        """Stop the node gracefully, killing it if it is still there after ``timeout`` seconds.

        Asks the node (on its stdin) to stop its applications and halt; if it
        has not gone after a couple of seconds, sends SIGTERM (``init:stop()``).
        Does nothing if the node is already gone.
        """
        with self._lock:
            if self._process.poll() is None:
                deadline = time.monotonic() + timeout
                try:
                    assert self._process.stdin is not None
                    self._process.stdin.write(b"stop\n")
                    self._process.stdin.flush()
                except OSError:
                    pass
                if self.wait(min(2.0, timeout / 2)) is None:
                    with contextlib.suppress(ProcessLookupError):
                        self._process.send_signal(signal.SIGTERM)
                    if self.wait(max(0.0, deadline - time.monotonic())) is None:
                        self._process.kill()
            self._reap()

    def kill(self) -> None:
        """SIGKILL the node: it gets no chance to clean up."""
        with self._lock:
            if self._process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
            self._reap()

    def _reap(self) -> None:
        _terminate(self._process)
        self._pump.join(5)
        self._finalizer.detach()


def _new_name(prefix: str) -> str:
    if not _NAME_PREFIX_RE.match(prefix):
        raise ValueError(f"node name prefix {prefix!r} may only use letters, digits, '_' and '-'")
    return f"{prefix}_{secrets.token_hex(4)}"


def _check_cookie(cookie: str) -> str:
    if not cookie or not all("!" <= ch <= "~" for ch in cookie):
        raise ValueError("a cookie must be non-empty printable ASCII without spaces")
    return cookie


@contextlib.contextmanager
def _private_home(cookie: str) -> Iterator[Path]:
    """A private directory holding only ``.erlang.cookie``, removed on exit.

    A node started with ``HOME`` pointing here reads its cookie from the file
    while it boots, so the cookie appears in no command line (``-setcookie``,
    even from an ``-args_file``, ends up in the VM's argv for all to see).
    """
    home = Path(tempfile.mkdtemp(prefix="elixirscope-node-"))
    try:
        fd = os.open(home / ".erlang.cookie", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as handle:
            handle.write(_check_cookie(cookie))
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


# The watcher each node runs, on its own process, before anything else (so a
# node whose parent dies during startup goes away too). It halts the node when
# stdin reaches end of file (the parent died or closed the pipe). On a "stop"
# line it stops every application but kernel and stdlib, newest first, then
# halts: init:stop() would do the same and then spend a second in user_sup's
# terminate/2 before the VM exits.
_ERL_WATCHER = (
    'spawn(fun() -> (fun Watch() -> case io:get_line("") of '
    'L when L =:= "stop\\n"; L =:= <<"stop\\n">> -> '
    "[application:stop(A) || {A, _, _} <- application:which_applications(), "
    "A =/= kernel, A =/= stdlib], erlang:halt(0); "
    "eof -> erlang:halt(0); {error, _} -> erlang:halt(0); _ -> Watch() end end)() end)"
)
_ELIXIR_WATCHER = """spawn(fn ->
  watch = fn watch ->
    case IO.gets("") do
      line when line in ["stop\\n", 'stop\\n'] ->
        for {app, _, _} <- Application.started_applications(), app not in [:kernel, :stdlib] do
          Application.stop(app)
        end
        System.halt(0)
      :eof -> System.halt(0)
      {:error, _reason} -> System.halt(0)
      _line -> watch.(watch)
    end
  end
  watch.(watch)
end)"""


def _erl_boot(marker: str, start: str | None) -> str:
    steps = [_ERL_WATCHER]
    if start:
        steps.append(start)
    steps.append(f'io:format("~s ~s~n", ["{marker}", node()])')
    return ", ".join(steps) + "."


def _elixir_boot(marker: str, start: str | None) -> str:
    steps = [_ELIXIR_WATCHER]
    if start:
        steps.append(start)
    steps.append(f'IO.puts("{marker} #{{node()}}")')
    return "\n".join(steps)


def launch_node(
    kind: NodeKind,
    *,
    app: SampleApp | None,
    name_prefix: str,
    cookie: str | None,
    longnames: bool,
    code_paths: Sequence[Path],
    start: str | None,
    extra_args: Sequence[str],
    timeout: float,
) -> BeamNode:
    short = _new_name(name_prefix)
    name = f"{short}@127.0.0.1" if longnames else short
    cookie = cookie if cookie is not None else secrets.token_hex(16)
    marker = f"{_READY_MARKER} {secrets.token_hex(6)}"

    began = time.monotonic()
    with _private_home(cookie) as home:
        env = {**os.environ, "HOME": str(home)}
        env.pop("XDG_CONFIG_HOME", None)
        env.setdefault("ERL_CRASH_DUMP_SECONDS", "0")
        paths = [str(path) for path in code_paths]
        if kind == "erl":
            command = [executable("erl"), "-name" if longnames else "-sname", name]
            command.append("-noshell")
            for path in paths:
                command += ["-pa", path]
            command += [*extra_args, "-eval", _erl_boot(marker, start)]
        else:
            command = [executable("elixir"), "--name" if longnames else "--sname", name]
            for path in paths:
                command += ["-pa", path]
            command += [*extra_args, "--no-halt", "-e", _elixir_boot(marker, start)]
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            assert process.stdout is not None
            pump = _OutputPump(process.stdout, marker + " ")
            pump.settled.wait(timeout)
        except BaseException:
            _terminate(process)
            raise
        full_name = pump.node_name

    what = f"the {app} sample node" if app else f"a bare {kind} node"
    if full_name is None:
        status = process.poll()
        if status is None and pump.eof:
            # The VM closes its output a moment before it exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = process.wait(5)
        _terminate(process)
        pump.join(5)
        if status is None:
            raise NodeStartError(f"Starting {what} timed out after {timeout:g} s.", pump.text())
        raise NodeStartError(
            f"Starting {what} failed: it exited with status {status}.", pump.text()
        )
    return BeamNode(
        name=full_name,
        cookie=cookie,
        kind=kind,
        app=app,
        process=process,
        pump=pump,
        startup_seconds=time.monotonic() - began,
    )


# The default busy limit (1 MB) lets a recorder that stalls for a moment on a busy
# machine lose a batch of the sample apps' bursts; production nodes that are
# traced often raise it the same way.
_DIST_BUFFER_BUSY_LIMIT = ("+zdbbl", "32768")


def start_sample(
    app: SampleApp,
    *,
    name_prefix: str | None = None,
    cookie: str | None = None,
    longnames: bool = False,
    workload: bool = False,
    timeout: float = 60,
) -> BeamNode:
    """Start a sample app (``"bank"`` or ``"kv"``) on a fresh node.

    Returns once the application is running. With ``workload=True`` its
    workload generator is started too (``Bank.Workload`` / ``kv_load``, with
    their default rate and seed). ``timeout`` covers the node's startup, not
    the first compilation.
    """
    spec = _spec(app)
    ebin = compile_sample(app)
    flag = "true" if workload else "false"
    kind: NodeKind
    if spec.language == "elixir":
        kind, start = "elixir", f":ok = Bank.start(workload: {flag})"
        vm_args: tuple[str, ...] = ("--erl", " ".join(_DIST_BUFFER_BUSY_LIMIT))
    else:
        kind, start = "erl", f"ok = kv:start(#{{workload => {flag}}})"
        vm_args = _DIST_BUFFER_BUSY_LIMIT
    return launch_node(
        kind,
        app=app,
        name_prefix=name_prefix or spec.name,
        cookie=cookie,
        longnames=longnames,
        code_paths=[ebin],
        start=start,
        extra_args=vm_args,
        timeout=timeout,
    )


def start_bare(
    kind: NodeKind = "erl",
    *,
    name_prefix: str | None = None,
    cookie: str | None = None,
    longnames: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 30,
) -> BeamNode:
    """Start a node that runs nothing but the standard applications.

    ``extra_args`` go on the ``erl`` or ``elixir`` command line (for
    ``elixir``, use ``--erl "..."`` to reach the VM).
    """
    if kind not in ("erl", "elixir"):
        raise ValueError(f"kind must be 'erl' or 'elixir', not {kind!r}")
    return launch_node(
        kind,
        app=None,
        name_prefix=name_prefix or f"bare_{kind}",
        cookie=cookie,
        longnames=longnames,
        code_paths=(),
        start=None,
        extra_args=extra_args,
        timeout=timeout,
    )
