"""Smart provider routing: ``provider: "auto"`` picks the engines of each utterance.

* :mod:`.rules` — the language table (``[routing] languages``): Korean to Vosk, English to
  tiny.en, every other language to whisper base…
* :mod:`.engines` — the engines a route can name: a provider, or one model of it
  (``whisper:base``), each with its own circuit breaker and figures.
* :mod:`.stats` — live figures per engine: a moving average of its time per audio second and
  its calls in flight, fed by the failover loop from every real call.
* :mod:`.policy` — a key's policy: the engines it may use, quality or cost first.
* :mod:`.language_id` — a session's language: the client's hint, else identified on its first
  speech (whisper base), kept while the model is sure of it.
* :mod:`.router` — puts them together per utterance; the ordered candidates go to the one
  failover loop (:mod:`asrhub.engine.failover`), and the reason goes on the final (``route``).

docs/routing.md is the user's guide.
"""

from __future__ import annotations

AUTO = "auto"
"""The provider name that asks for routing."""
