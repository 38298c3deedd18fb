"""``elixirscope export``: a recording as a Perfetto trace, OTLP/JSON or Parquet files."""

from __future__ import annotations

import time
from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.recording.export import (
    FORMATS,
    open_source,
    output_directory,
    output_file,
)
from elixirscope.recording.export_otlp import write_otlp
from elixirscope.recording.export_parquet import write_parquet
from elixirscope.recording.export_perfetto import write_perfetto


@click.command("export")
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="perfetto: Chrome trace JSON for ui.perfetto.dev; otlp: OpenTelemetry "
                   "OTLP/JSON, one request per line; parquet: a directory of Parquet files.")
@click.option("-o", "--output", "target", type=click.Path(path_type=Path), required=True,
              help="The file (perfetto, otlp) or directory (parquet) to write.")
@click.option("--force", is_flag=True, help="Replace the output if it exists.")
@click.option("--no-text", is_flag=True,
              help="Leave out the Elixir text of arguments, results and messages (faster).")
def export(recording: Path, fmt: str, target: Path, force: bool, no_text: bool) -> None:
    """Exports RECORDING for other tools: Perfetto, OpenTelemetry backends, dataframes."""
    started = time.monotonic()
    if fmt == "parquet":
        with (output_directory(target, recording, force=force) as partial,
              open_source(recording, notice=_notice) as source):
            counts = write_parquet(source, partial, text=not no_text)
    else:
        write = write_perfetto if fmt == "perfetto" else write_otlp
        with (output_file(target, recording, force=force) as partial,
              open_source(recording, notice=_notice) as source):
            counts = write(source, partial, text=not no_text)
    summary = ", ".join(f"{count:,} {name.removesuffix('.parquet')}"
                        for name, count in counts.items())
    _notice(f"wrote {target} ({fmt}: {summary}) in {time.monotonic() - started:.1f} s")


def _notice(text: str) -> None:
    output.err.print(text, markup=False, highlight=False)
