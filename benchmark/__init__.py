"""The benchmark itself: M3-HumanEval (the task set, its builders and loaders) and the sandboxed grader.

Both the load generator (``loadgen``) and the server side (``serving``: the embedded models are trained
on the task set) import it; it imports neither of them, nor ``observability`` or ``m3bench``. Being the
part both build on, it also holds the one thing both stamp on their results: the checkout's git commit
(``benchmark.checkout``).
"""
