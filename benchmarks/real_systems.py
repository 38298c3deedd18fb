"""The real BEAM systems Debian packages, started and driven here on loopback: RabbitMQ
(AMQP through pika), ejabberd (XMPP through slixmpp) and Yaws (HTTP). Each is started
by this module, loaded by a real client and stopped again; ``bench_real_systems``
measures what tracing them costs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

RABBIT_COOKIE = Path("/var/lib/rabbitmq/.erlang.cookie")
EJABBERD_COOKIE = Path("/var/lib/ejabberd/.erlang.cookie")
EJABBERD_CONFIG = Path("/etc/ejabberd/ejabberd.yml")


@dataclass(frozen=True)
class System:
    """A running system: its node, cookie, the modules worth tracing, and a load that
    runs for some seconds and answers with operations per second."""

    name: str
    node: str
    cookie: str
    modules: tuple[str, ...]
    load: Callable[[float], float]


def apt_install(*packages: str) -> None:
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True,
                                                     check=False).returncode != 0]
    if missing:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                       check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# --- RabbitMQ --------------------------------------------------------------------------


@contextlib.contextmanager
def rabbitmq() -> Iterator[System]:
    apt_install("rabbitmq-server")
    server = subprocess.Popen(
        ["su", "rabbitmq", "-s", "/bin/sh", "-c",
         "HOME=/var/lib/rabbitmq exec /usr/lib/rabbitmq/bin/rabbitmq-server"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(5672, 90)
        yield System("RabbitMQ", f"rabbit@{socket.gethostname().split('.')[0]}",
                     RABBIT_COOKIE.read_text().strip(),
                     ("rabbit_channel", "rabbit_amqqueue_process"), amqp_load)
    finally:
        subprocess.run(["rabbitmqctl", "stop"], capture_output=True, timeout=60, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)


def amqp_load(seconds: float) -> float:
    """One publisher and one consumer on one queue; messages consumed per second."""
    import pika

    queue = "elixirscope-bench"
    params = pika.ConnectionParameters("127.0.0.1")
    setup = pika.BlockingConnection(params)
    setup.channel().queue_declare(queue=queue, auto_delete=False)
    setup.channel().queue_purge(queue=queue)
    setup.close()
    consumed = 0
    stop = threading.Event()

    def consume() -> None:
        nonlocal consumed
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=500)
        for method, _, _ in channel.consume(queue, auto_ack=True, inactivity_timeout=0.2):
            if stop.is_set():
                break
            if method is not None:
                consumed += 1
        connection.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    started = time.monotonic()
    counted_from, base = started + 1, 0  # the first second warms up
    body = b"x" * 100
    while time.monotonic() < started + seconds + 1:
        for _ in range(200):
            channel.basic_publish("", queue, body)
        connection.process_data_events(0)
        if base == 0 and time.monotonic() >= counted_from:
            base = consumed
    stop.set()
    consumer.join(timeout=30)
    connection.close()
    return (consumed - base) / seconds


# --- ejabberd --------------------------------------------------------------------------


@contextlib.contextmanager
def ejabberd() -> Iterator[System]:
    apt_install("ejabberd")
    original = EJABBERD_CONFIG.read_text()
    try:
        # The default c2s_shaper (3000 B/s) caps what one client can send.
        unshaped = original.replace("  c2s_shaper:\n    none: admin\n    normal: all",
                                    "  c2s_shaper:\n    none: all")
        if unshaped == original:
            raise RuntimeError(f"no c2s_shaper rule to lift in {EJABBERD_CONFIG}")
        EJABBERD_CONFIG.write_text(unshaped)
        subprocess.run(["ejabberdctl", "start"], check=True, capture_output=True, timeout=60)
        subprocess.run(["ejabberdctl", "started"], capture_output=True, timeout=120,
                       check=False)
        wait_port(5222, 60)
        for user in ("alice", "bob"):
            subprocess.run(["ejabberdctl", "register", user, "localhost", "secret"],
                           capture_output=True, timeout=30, check=False)
        yield System("ejabberd", "ejabberd@localhost", EJABBERD_COOKIE.read_text().strip(),
                     ("ejabberd_c2s",), xmpp_load)
    finally:
        subprocess.run(["ejabberdctl", "stop"], capture_output=True, timeout=60, check=False)
        subprocess.run(["ejabberdctl", "stopped"], capture_output=True, timeout=60,
                       check=False)
        EJABBERD_CONFIG.write_text(original)


def xmpp_load(seconds: float) -> float:
    """alice sends to bob as fast as the stream takes it; messages bob got per second."""
    return asyncio.run(_xmpp_load(seconds))


async def _xmpp_load(seconds: float) -> float:
    import slixmpp

    def client(user: str) -> slixmpp.ClientXMPP:
        xmpp = slixmpp.ClientXMPP(f"{user}@localhost/bench", "secret")
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        return xmpp

    alice, bob = client("alice"), client("bob")
    received = 0

    def on_message(_: object) -> None:
        nonlocal received
        received += 1

    bob.add_event_handler("message", on_message)
    for xmpp in (alice, bob):
        ready = asyncio.Event()
        xmpp.add_event_handler("session_start", lambda _, r=ready: r.set())
        xmpp.connect(("127.0.0.1", 5222))
        await asyncio.wait_for(ready.wait(), 30)
    started = time.monotonic()
    base = None
    while time.monotonic() < started + seconds + 1:
        for _ in range(100):
            alice.send_message(mto="bob@localhost/bench", mbody="hello", mtype="chat")
        await asyncio.sleep(0.005)
        if base is None and time.monotonic() >= started + 1:
            base = received
    await asyncio.sleep(0.5)
    for xmpp in (alice, bob):
        xmpp.disconnect()
    return (received - (base or 0)) / seconds


# --- Yaws ------------------------------------------------------------------------------


@contextlib.contextmanager
def yaws(cookie: str = "elixirscope-bench") -> Iterator[System]:
    apt_install("yaws")
    folder = Path(tempfile.mkdtemp(prefix="es-yaws-"))
    docroot, logs = folder / "www", folder / "logs"
    docroot.mkdir()
    logs.mkdir()
    (docroot / "index.html").write_text("<html><body>hello</body></html>\n")
    (docroot / "report.yaws").write_text(
        "<html><erl>\nout(A) -> {html, integer_to_list(lists:sum(lists:seq(1, 100)))}.\n"
        "</erl></html>\n")
    conf = folder / "yaws.conf"
    # No access log: at 20 k requests/s Yaws's log writer falls behind without bound
    # (1.2 GB queued in 15 s here), and the growing backlog, not the tracing, would set
    # the throughput of whichever run came later.
    conf.write_text(f"logdir = {logs}\nebin_dir = {folder}\n"
                    f"<server localhost>\n port = 8088\n listen = 127.0.0.1\n"
                    f" docroot = {docroot}\n access_log = false\n</server>\n")
    name = "esyaws"
    subprocess.run(["yaws", "--daemon", "--conf", str(conf), "--sname", name, "--setcookie",
                    cookie, "--id", name], check=True, capture_output=True, timeout=60)
    try:
        wait_port(8088, 60)
        yield System("Yaws", f"{name}@{socket.gethostname().split('.')[0]}", cookie,
                     ("yaws_server",), http_load)
    finally:
        subprocess.run(["yaws", "--stop", "--id", name], capture_output=True, timeout=60,
                       check=False)
        shutil.rmtree(folder, ignore_errors=True)


def http_load(seconds: float, connections: int = 8) -> float:
    """Keep-alive GETs of a .yaws page and a static file; responses per second."""
    return asyncio.run(_http_load(seconds, connections))


async def _http_load(seconds: float, connections: int) -> float:
    done = 0
    counting = False
    deadline = time.monotonic() + seconds + 1

    async def worker(path: str) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", 8088)
        request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                await writer.drain()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if counting:
                    done += 1
        finally:
            writer.close()

    async def clock() -> None:
        nonlocal counting
        await asyncio.sleep(1)
        counting = True

    paths = ["/report.yaws", "/index.html"]
    await asyncio.gather(clock(), *(worker(paths[i % 2]) for i in range(connections)))
    return done / seconds
