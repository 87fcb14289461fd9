"""Prometheus metrics for the server, exposed on an HTTP port when asked (`--metrics-port`).

prometheus-client is an optional extra; without a metrics port nothing is imported or counted.
"""

from __future__ import annotations

from typing import Any

from .environment import require_modules


class ServerMetrics:
    """Counters and histograms of one server. Disabled: every method is a cheap no-op."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        if not enabled:
            return
        require_modules(["prometheus_client"], "metrics", "--metrics-port (Prometheus metrics)")
        import prometheus_client as prom

        self.registry = prom.CollectorRegistry()
        self.sessions = prom.Gauge("gymwire_sessions", "Live sessions", ["env"], registry=self.registry)
        self.connections = prom.Gauge("gymwire_connections", "Open connections", registry=self.registry)
        self.sessions_opened = prom.Counter(
            "gymwire_sessions_opened", "Sessions opened", ["env"], registry=self.registry
        )
        self.steps = prom.Counter("gymwire_steps", "Steps executed", ["env"], registry=self.registry)
        self.step_latency = prom.Histogram(
            "gymwire_step_seconds",
            "Step latency inside the server (receipt to reply)",
            ["env"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.errors = prom.Counter("gymwire_errors", "Errors answered, by code name", ["code"], registry=self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Serve /metrics from a daemon thread; the server (for `shutdown()`) comes back. On loopback,
        a request whose Host names another machine is refused: a web page reached through DNS
        rebinding would otherwise read the counters."""
        import threading
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        import prometheus_client as prom
        from prometheus_client.exposition import ThreadingWSGIServer

        from gymwire.protocol import rebinding_refusal

        metrics = prom.make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            refusal = rebinding_refusal(environ.get("HTTP_HOST"), host)
            if refusal:
                start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
                return [refusal.encode()]
            return metrics(environ, start_response)

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
                pass

        server = make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=Quiet)
        threading.Thread(target=server.serve_forever, name="gymwire-metrics", daemon=True).start()
        return server

    def session_opened(self, env: str) -> None:
        if self.enabled:
            self.sessions_opened.labels(env).inc()
            self.sessions.labels(env).inc()

    def session_closed(self, env: str) -> None:
        if self.enabled:
            self.sessions.labels(env).dec()

    def connection(self, delta: int) -> None:
        if self.enabled:
            self.connections.inc(delta)

    def step(self, env: str, seconds: float) -> None:
        if self.enabled:
            self.steps.labels(env).inc()
            self.step_latency.labels(env).observe(seconds)

    def error(self, code_name: str) -> None:
        if self.enabled:
            self.errors.labels(code_name).inc()
