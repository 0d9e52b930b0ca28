"""Calibration instrument: a streaming OpenAI-compatible server whose timing is programmed.

``loadgen.calibration.server`` serves chat and text completions with a programmed time to first token,
inter-token latency and length, and measures how late its own sends were, so a client's measured
timings can be compared with what the server really did.
"""
