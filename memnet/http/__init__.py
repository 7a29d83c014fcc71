"""The daemon's HTTP face: the OpenAI-compatible API (openai_api.py) and the dashboard
(dashboard.py, static/), behind one guard (guard.py), served by Hypercorn's trio worker inside
the daemon (memnet/daemon/http.py)."""
