"""Findings: what is wrong in a recording, with its evidence. Each detector is one module
of this package that reads the recording through its queries and analyses (never
upward) and is listed once in ``detectors.DETECTORS``."""
