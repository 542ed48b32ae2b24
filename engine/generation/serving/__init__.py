"""Serving: an OpenAI-compatible HTTP server with continuous batching over a paged KV cache.

``PagedKVPool`` (pages and block tables), ``Scheduler`` (the batching loop on its own thread) and the
model's paged forward work without the web stack; ``app.create_app`` and ``server.serve`` need the
``serve`` extra (FastAPI, uvicorn, prometheus-client). ``tritongpt serve`` is the command.
"""

from .paged_cache import OutOfPages, PagedKVPool
from .scheduler import Draining, Event, QueueFull, Scheduler, Sequence

__all__ = ["Draining", "Event", "OutOfPages", "PagedKVPool", "QueueFull", "Scheduler", "Sequence"]
