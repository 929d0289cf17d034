"""What enforce.isolate_fallback may say, in a module of its own: the config check needs it
and runs before the eBPF compile starts (issue 22), and response.py imports the Docker SDK
(about 0.3 s) that the check does not need."""

ISOLATE_FALLBACKS = ("none", "kill", "pause")
