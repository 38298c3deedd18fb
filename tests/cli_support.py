"""Running the command line in-process, for tests."""

from __future__ import annotations

import json

import pytest

from elixirscope.cli.app import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``elixirscope ARGS``."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else 1, captured.out, captured.err


def json_rows(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    """The JSON lines ``elixirscope ARGS --json`` prints (it must succeed)."""
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]
