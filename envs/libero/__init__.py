"""LIBERO, offline: its conventions (`conventions`, no simulator import), the environment under
the published protocol (`env`), this stack's renderer (`render`) and scripted experts (`experts`)."""
