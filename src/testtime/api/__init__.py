"""Test-time scaling as an OpenAI-compatible service (``testtime serve tts``).

Modules: ``options`` (the ``tts`` request object, the model-name shorthand, the service's
defaults and limits, the per-request ``RunConfig``), ``schemas`` (request bodies),
``engine`` (one policy + scorer for all requests; each request a problem search, recorded and
selected as ``testtime run`` does), ``progress`` (what a streamed request reports),
``responses`` / ``streaming`` (OpenAI bodies and server-sent events), ``app`` (FastAPI routes,
authentication, limits), ``server`` (uvicorn, foreground or background thread). FastAPI and
uvicorn are the ``serve`` extra; nothing here is imported by ``import testtime``.
"""
