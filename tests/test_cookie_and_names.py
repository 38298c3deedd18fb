from __future__ import annotations

from pathlib import Path

import pytest

from elixirscope.beam_names import module_atom, module_display, parse_pid_text
from elixirscope.dist.cookie import resolve_cookie
from elixirscope.dist.epmd import (
    names_request,
    parse_names_response,
    parse_port2_response,
    port_please_request,
)
from elixirscope.dist.names import is_long_host, own_node_name, split_node_name
from elixirscope.errors import ConnectError, CookieNotFound, ProtocolError
from elixirscope.etf import Atom


def test_cookie_argument_wins_over_env_and_file(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".erlang.cookie").write_text("fromfile\n")
    monkeypatch.setenv("ERLANG_COOKIE", "fromenv")
    assert resolve_cookie("fromarg").reveal() == "fromarg"
    assert resolve_cookie().reveal() == "fromenv"
    monkeypatch.delenv("ERLANG_COOKIE")
    cookie = resolve_cookie()
    assert cookie.reveal() == "fromfile"
    assert "fromfile" not in repr(cookie) and ".erlang.cookie" in repr(cookie)


def test_missing_cookie_says_where_it_looked(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ERLANG_COOKIE", raising=False)
    with pytest.raises(CookieNotFound, match="ERLANG_COOKIE"):
        resolve_cookie()


def test_epmd_requests_and_responses() -> None:
    assert port_please_request("app") == b"\x00\x04\x7aapp"
    assert names_request() == b"\x00\x01\x6e"
    response = (b"\x77\x00" + (40123).to_bytes(2, "big") + b"\x4d\x00"
                + (6).to_bytes(2, "big") + (6).to_bytes(2, "big") + (3).to_bytes(2, "big")
                + b"app" + (0).to_bytes(2, "big"))
    info = parse_port2_response(response)
    assert info is not None and (info.name, info.port, info.highest_version) == ("app", 40123, 6)
    assert parse_port2_response(b"\x77\x01") is None
    with pytest.raises(ProtocolError):
        parse_port2_response(b"\x77\x00\x01")
    names = parse_names_response(b"\x00\x00\x11\x11name a at port 1\nname b_2 at port 65000\n")
    assert names == [("a", 1), ("b_2", 65000)]


def test_node_names() -> None:
    assert split_node_name("app@host") == ("app", "host")
    assert split_node_name("app")[0] == "app"
    with pytest.raises(ConnectError):
        split_node_name("@host")
    with pytest.raises(ConnectError):
        split_node_name("a@b@c")
    assert is_long_host("host.example.com") and is_long_host("127.0.0.1")
    assert not is_long_host("host")
    assert own_node_name("127.0.0.1", "127.0.0.1").endswith("@127.0.0.1")
    assert "." not in own_node_name("host", "127.0.0.1").split("@")[1]


@pytest.mark.parametrize(("written", "atom"), [
    ("MyApp.Worker", "Elixir.MyApp.Worker"),
    ("Elixir.Enum", "Elixir.Enum"),
    ("Enum", "Elixir.Enum"),
    (":gen_server", "gen_server"),
    ("lists", "lists"),
    (':"Elixir.Foo"', "Elixir.Foo"),
])
def test_module_names_as_written_in_elixir_or_erlang(written: str, atom: str) -> None:
    assert module_atom(written) == Atom(atom)


def test_module_display_and_pid_text() -> None:
    assert module_display("Elixir.MyApp.Worker") == "MyApp.Worker"
    assert module_display("lists") == ":lists"
    assert parse_pid_text("#PID<0.123.0>") == (0, 123, 0)
    assert parse_pid_text("<0.5.1>") == (0, 5, 1)
    assert parse_pid_text("0.5.1") is None
