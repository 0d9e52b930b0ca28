"""What is sent: the task set, the (model, task) each request draws, and its request body.

Bodies are built once per task (image as a base64 data URL, the task's prompt, which already holds the
instruction in the task's language) and kept as bytes with the model name spliced in at send time, so
the hot path copies bytes and formats nothing. Draws take exactly three ``random()`` values, which
keeps an open-loop arrival sequence identical on every worker.

``Sampling.by: cycle`` makes draws deterministic: the n-th send of a stage (its *slot*) asks pair
``n mod lap`` of a fixed list of every (model, task) pair, shuffled once by the seed. Any ``lap``
consecutive slots ask every pair exactly once, so a stage with no warmup and ``measure_requests`` equal
to ``lap`` measures each task once per model (what an accuracy run wants), whatever the concurrency.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.tasks.schema import TaskRecord
from loadgen.profile import LoadgenError, RequestOptions, Sampling

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def load_tasks(task_dir: Path) -> list[TaskRecord]:
    from benchmark.tasks.loaders.common import LoaderError
    from benchmark.tasks.taskset import read_tasks

    if not task_dir.exists():
        raise LoadgenError(f"task set {task_dir} does not exist (build one with `m3bench tasks build`)")
    try:
        return read_tasks(task_dir)
    except LoaderError as exc:
        raise LoadgenError(f"cannot read task set: {exc}") from None


class Workload:
    def __init__(
        self,
        task_dir: Path,
        models: list[str],
        sampling: Sampling,
        request: RequestOptions,
        *,
        tasks: list[TaskRecord] | None = None,
        seed: int = 0,
    ) -> None:
        self.root = task_dir if task_dir.is_dir() else task_dir.parent
        every = tasks if tasks is not None else load_tasks(task_dir)
        chosen = [
            task
            for task in every
            if (sampling.languages is None or task.natural_language in sampling.languages)
            and (sampling.groups is None or task.metadata.group in sampling.groups)
        ]
        if not chosen:
            raise LoadgenError(
                f"no task in {task_dir} matches languages={sampling.languages} groups={sampling.groups}"
            )
        if request.api == "completions" and any(task.images for task in chosen):
            raise LoadgenError("api 'completions' cannot send images: sample text-only groups or use 'chat'")
        self._check_images(chosen, task_dir)
        self.tasks = chosen
        self.request = request
        self.by = sampling.by
        self.languages = sorted({task.natural_language for task in chosen})
        self.by_language = {
            lang: [i for i, t in enumerate(chosen) if t.natural_language == lang] for lang in self.languages
        }
        weights = sampling.model_weights or {}
        shares = [max(0.0, float(weights.get(model, 1.0 if not weights else 0.0))) for model in models]
        if sum(shares) <= 0:
            raise LoadgenError("model_weights give every model a zero share")
        total = sum(shares)
        self.models = models
        self.cumulative: list[float] = []
        running = 0.0
        for value in shares:
            running += value / total
            self.cumulative.append(running)
        order = list(range(len(chosen)))
        random.Random(f"m3bench-cycle:{seed}").shuffle(order)
        self.cycle = [(model, index) for index in order for model in models] if self.by == "cycle" else []
        self._bodies: dict[int, bytes] = {}
        self.path = "/v1/chat/completions" if request.api == "chat" else "/v1/completions"

    def _check_images(self, tasks: list[TaskRecord], task_dir: Path) -> None:
        """Every image a chosen task names is a readable file (a Locust process would fail at start-up)."""
        missing = []
        for task in tasks:
            for image in task.images:
                path = self.root / image.path
                if not path.is_file() or not os.access(path, os.R_OK):
                    missing.append((task.id, path))
        if missing:
            task_id, path = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise LoadgenError(
                f"task set {task_dir}: task {task_id}: image {path} is missing or unreadable{more}"
            )

    @property
    def lap(self) -> int:
        """Sends that ask every (model, task) pair once under ``by: cycle``."""
        return len(self.tasks) * len(self.models)

    def draw(self, rng: random.Random, slot: int = 0) -> tuple[str, int]:
        """(model, task index): always exactly three draws from ``rng``. ``slot``: the send's position in
        its stage (0, 1, ...), which alone decides the pair under ``by: cycle``."""
        pick_model, pick_language, pick_task = rng.random(), rng.random(), rng.random()
        if self.cycle:
            return self.cycle[slot % len(self.cycle)]
        model = self.models[-1]
        for name, edge in zip(self.models, self.cumulative, strict=True):
            if pick_model < edge:
                model = name
                break
        if self.by == "language":
            pool = self.by_language[self.languages[int(pick_language * len(self.languages))]]
            return model, pool[int(pick_task * len(pool))]
        return model, int(pick_task * len(self.tasks))

    def length(self, rng: random.Random) -> bytes | None:
        """A request's own output limit, for ``body(length=...)``, when the profile spreads them
        (``request.max_tokens_min``): one more draw from ``rng``; else None (the body's own limit)."""
        low, high = self.request.max_tokens_min, self.request.max_tokens
        if low is None or high is None:
            return None
        return b',"max_tokens":%d' % rng.randint(low, high)

    def body(self, task_index: int, model: str, length: bytes | None = None, keep_stop: bool = True) -> bytes:
        """The task's prebuilt body with the model spliced in; ``length`` (a trace row's output-length
        members, ``loadgen.traces.replay.length_fields``) replaces its ``max_tokens``, and its ``stop``
        too unless ``keep_stop``. Both are the body's last keys (``_build``), so this is a cut, no parse."""
        base = self._bodies.get(task_index)
        if base is None:
            base = self._bodies[task_index] = self._build(self.tasks[task_index])
        tail = b',"model":' + json.dumps(model).encode() + b"}"
        if length is None:
            return base[:-1] + tail
        at_max = base.rfind(b',"max_tokens":')
        at_stop = base.rfind(b',"stop":', 0, at_max)
        cut = at_max if keep_stop or at_stop < 0 else at_stop
        return base[:cut] + length + tail

    def _image_url(self, task: TaskRecord, index: int) -> str:
        image = task.images[index]
        path = self.root / image.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LoadgenError(f"task {task.id}: cannot read image {path}: {exc.strerror}") from None
        mime = _MIME.get(path.suffix.lower(), "image/png")
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    def _build(self, task: TaskRecord) -> bytes:
        options = self.request
        body: dict[str, Any] = {}
        if options.api == "chat":
            messages: list[dict[str, Any]] = []
            if options.system_prompt:
                messages.append({"role": "system", "content": options.system_prompt})
            if task.images:
                parts: list[dict[str, Any]] = [
                    {"type": "image_url", "image_url": {"url": self._image_url(task, i)}}
                    for i in range(len(task.images))
                ]
                parts.append({"type": "text", "text": task.prompt})
                messages.append({"role": "user", "content": parts})
            else:
                messages.append({"role": "user", "content": task.prompt})
            body["messages"] = messages
        else:
            body["prompt"] = task.prompt
        body["max_tokens"] = options.max_tokens or task.gen.max_tokens
        if task.gen.stop:
            body["stop"] = task.gen.stop
        if options.temperature is not None:
            body["temperature"] = options.temperature
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        body.update(options.extra_body)
        body.pop("model", None)
        for key in ("stop", "max_tokens"):  # last, in this order: body(length=...) cuts them off
            if key in body:
                body[key] = body.pop(key)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def warm(self, pause: Callable[[], None] | None = None) -> None:
        """Build every body now (before the first stage) so no image is read during measurement.

        ``pause`` is called between tasks (a gevent yield), so heartbeats go out meanwhile.
        """
        for index in range(len(self.tasks)):
            if index not in self._bodies:
                self._bodies[index] = self._build(self.tasks[index])
                if pause is not None:
                    pause()
