"""Step scorers behind HTTP: the ``testtime serve prm`` service and its clients.

* :mod:`.protocol`: the wire format both sides speak (request body, limits, API key variable);
* :mod:`.http`: the client side's HTTP plumbing (one client per event loop, POST with the
  project's retry policy);
* :mod:`.server`: the FastAPI service (``testtime serve prm``);
* :mod:`.client`: ``--prm http://HOST:PORT``, the client of that service;
* :mod:`.vllm_pooling`: ``--prm vllm-pooling:...``, a PRM served by vLLM's pooling API.

FastAPI, uvicorn and httpx are the ``serve`` extra, imported only when used.
"""
