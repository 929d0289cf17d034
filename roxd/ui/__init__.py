"""The web dashboard: a loopback HTTP listener in roxd serving the control API's own routes
under /api/ behind a session cookie, and a static single-page UI (static/). See
docs/dashboard.md."""
