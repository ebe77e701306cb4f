"""Demo upstream: a local, deterministic simulator of LLM provider HTTP APIs.

There is no internet in the demo, CI or benchmark environments, so the relay talks to this
process instead of OpenAI / Anthropic.  It speaks their wire formats byte-for-byte closely
enough for the official ``openai`` and ``anthropic`` SDKs (and therefore the relay's parsers)
to accept it:

* OpenAI: ``POST /v1/chat/completions`` (plain, SSE streaming, tool calls),
  ``POST /v1/embeddings`` (float and base64), ``GET /v1/models`` and ``GET /v1/models/{id}``,
  legacy ``POST /v1/completions`` (``text_completion``, plain and SSE).
* Mistral: ``POST /v1/fim/completions`` (Codestral's fill-in-the-middle, plain and SSE; see
  ``completions``).
* Anthropic: ``POST /v1/messages`` (plain, SSE streaming, ``tool_use``),
  ``POST /v1/messages/count_tokens``; ``GET /v1/models`` answers in Anthropic's list format
  when the request carries an ``anthropic-version`` header.
* Test hooks: ``GET|DELETE /_demo/requests``, ``GET /_demo/requests/last``,
  ``GET|DELETE /_demo/stats``, ``GET /_demo/health``.

Behind the one OpenAI chat shape stand several providers' rules (see ``providers``): OpenAI's
reasoning models (``o1*``, ``o3*``, ``o4*``, ``gpt-5*``) refuse ``max_tokens`` and a
``temperature`` other than 1 with OpenAI's 400 bodies and take ``max_completion_tokens``; with
``x-demo-provider: mistral`` (the relay sends its provider's slug to demo routes) ``seed``,
``max_completion_tokens`` and ``stream_options`` are refused with Mistral's 422
``extra_forbidden`` body and a stream carries its usage on its last chunk. The rest is as
lenient as OpenAI.

Behaviour is steered by configuration (``make_app`` keywords, CLI flags or ``DEMO_UPSTREAM_*``
environment variables) and, per request, by ``x-demo-*`` request headers so one test can shape
one request without restarting the server (see :data:`HEADER_FIELDS`, :class:`DemoConfig`):

====================================  =========================================================
``x-demo-latency-ms``                 delay before the first byte (valid, authenticated calls)
``x-demo-chunk-delay-ms``             delay between SSE events
``x-demo-linger-ms``                  keep a stream open this long after its last event
``x-demo-completion-tokens``          tokens to produce (default 16; capped by max_tokens)
``x-demo-prompt-tokens``              override the prompt-token estimate
``x-demo-cached-tokens``              cached prompt tokens to report
``x-demo-prompt-cache-s``             keep prompt prefixes in a prompt cache this many seconds:
                                      a prompt starting with messages this upstream saw within
                                      that time reports them as cached tokens (its own cache,
                                      as each provider has; 0, the default: no cache)
``x-demo-cache-creation-tokens``      Anthropic cache writes to the 5-minute cache
``x-demo-cache-creation-1h-tokens``   Anthropic cache writes to the 1-hour cache
``x-demo-reasoning-tokens``           thinking tokens, reported on top of the visible output
``x-demo-input-audio-tokens``         audio tokens of the prompt (OpenAI's shape)
``x-demo-output-audio-tokens``        audio tokens of the output (OpenAI's shape)
``x-demo-usage-shape``                ``openai``, ``deepseek`` or ``gemini`` usage on the chat
                                      endpoint (default: by the model's name, ``gemini*`` and
                                      ``deepseek*`` as those providers report; see ``usage``)
``x-demo-provider``                   whose rules to follow: ``mistral``, or OpenAI's
``x-demo-chunks``                     content deltas per stream (default: one per token)
``x-demo-error``                      ``429``/``500``/... error body in the endpoint's shape,
                                      ``disconnect``, ``cut``, ``no-usage``, or ``none``
``x-demo-error-rate``                 probability (0-1) that ``x-demo-error`` applies
``x-demo-retry-after``                ``Retry-After`` seconds sent with 429 (default 1)
====================================  =========================================================

It is also the upstream for latency benchmarks, so the hot path avoids anything heavy: orjson,
no per-request logging, cached filler text / embeddings, and a single socket write for a whole
stream when no inter-chunk delay is requested.

Run it with ``python -m simulators.llm --host 127.0.0.1 --port 8002``.

One module per concern, each importing only the ones listed before it:

* ``wire``: ids, JSON bodies, the bearer token, dropping a connection on purpose.
* ``config``: :class:`DemoConfig`, the ``DEMO_UPSTREAM_*`` and ``x-demo-*`` parsers.
* ``text``: filler text, the prompt-token estimate, example values for tool arguments.
* ``endpoint``: per-app state and request log, the endpoint wrapper, the stream writers.
* ``errors``: error bodies in OpenAI's and Anthropic's shapes, injected errors.
* ``providers``: the rules of the providers behind the OpenAI shape.
* ``usage``: the usage object in each provider's dialect (OpenAI, DeepSeek, Gemini, Anthropic).
* ``openai``, ``embeddings``, ``models``, ``anthropic``: one module per API shape.
* ``server``: routing, the ``/_demo`` hooks, :func:`make_app`, :func:`start_in_thread`.
* ``cli``: the command line (``__main__`` runs it).
"""

from .cli import main
from .config import DEFAULT_MODELS, HEADER_FIELDS, DemoConfig, config_from_env
from .server import RunningServer, make_app, start_in_thread
from .text import estimate_prompt_tokens

__all__ = [
    "DEFAULT_MODELS",
    "HEADER_FIELDS",
    "DemoConfig",
    "RunningServer",
    "config_from_env",
    "estimate_prompt_tokens",
    "main",
    "make_app",
    "start_in_thread",
]
