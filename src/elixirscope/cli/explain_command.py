"""``elixirscope explain REC [TARGET]``: what happened, in plain words."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.cli.options import json_option
from elixirscope.explain import LLMConfig
from elixirscope.explain import explain as explain_recording
from elixirscope.recordings import open_recording


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.argument("target", required=False, metavar="[FINDING|span N|PID|NAME]")
@click.option("--offline", is_flag=True,
              help="Build the explanation by rules even when a language model is configured.")
@click.option("--show-prompt", is_flag=True,
              help="Print the evidence (and the prompt, when a model is asked) too.")
@json_option("The explanation, its evidence and source as one JSON object.")
def explain(recording: Path, target: str | None, offline: bool, show_prompt: bool,
            as_json: bool) -> None:
    """Explains in a paragraph what happened in recording REC: its worst findings, one
    finding (its number as `diagnose` prints it), a span (`span 123`) or a process (a pid
    or a registered name). Built by rules from the findings and their evidence (offline,
    the default); by a language model given the same evidence, secrets redacted, when
    ELIXIRSCOPE_LLM_URL (an OpenAI-compatible endpoint) and ELIXIRSCOPE_LLM_MODEL are
    set (ELIXIRSCOPE_LLM_KEY for its key)."""
    llm = None if offline else LLMConfig.from_env()
    with open_recording(recording) as rec:
        found = explain_recording(rec, target, llm=llm)
    if as_json:
        output.json_line(found.as_dict())
        return
    if show_prompt:
        output.err.print(found.prompt or found.evidence, markup=False, highlight=False)
        output.err.print("")
    source = "rules" if found.source == "rules" else f"the model {found.source}"
    output.out.print(f"{found.subject} (explained by {source}):", markup=False,
                     highlight=False)
    output.out.print(found.text, markup=False, highlight=False)
