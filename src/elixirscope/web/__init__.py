"""The execution-cinema web UI: a JSON API over a recording (finished or live) and
the page that draws it (vanilla ES modules and canvas, shipped in ``static/``)."""
