"""The server runtime's parts, one job a module; `gymwire.sdk.server.GymServer` puts them together.

- `connections.py`  a connection that owns its loop over a transport (a WebSocket, or in-memory
                    queues in tests): frames in and out of its `protocol.ServerConnection`, the
                    heartbeat, each request handed to the server's one dispatch.
- `scheduling.py`   requests in flight: tasks, deadlines, cancel, what a late answer leaves behind.
- `session_requests.py` open, reset, step (one path), step_batch, close, resume; the one mapping of
                    environment failures to ENV_CRASHED.
- `sessions.py`     the session registry: capacity, ownership, resume, detaching, reaping.
- `request_line.py` a session's FIFO line of requests.
- `startup.py`      limits and listening errors checked before serving.
- `gc_tuning.py`    the garbage-collector settings of a serving process.
"""
