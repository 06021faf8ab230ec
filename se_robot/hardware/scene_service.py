"""The emulator's scripted scene operator over HTTP, for a learner in another process.

``se-robot emulate --scene-port PORT`` runs the emulated arm in its own process; the env that
trains or records on it must still get the cube put back between episodes. This small JSON
service is that operator's line: ``POST /scene/restore`` with ``{"task": "lift", "seed": 123}``
draws a pose from the task's reset distribution with that seed and places the cube (and target)
in the twin; the reply is ``{"restored": true, "cube_pos": [x, y, z]}``. An optional ``"cube_xy":
[x, y]`` puts the cube at that table spot (yaw 0) instead of the draw's (camera alignment places
it at known spots). ``declines`` is a fault
knob like the bus's: the next that many requests answer ``{"restored": false}`` without touching
the scene (an operator who cannot put the cube back just now). The client is
``se_robot.envs.operator.HttpSceneOperator`` (``operator="http://HOST:PORT"``). The body is
JSON of bounded size, nothing else is parsed, and the service binds to localhost by default.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from se_robot.tasks import ResetSample, Task

MAX_BODY_BYTES = 4096
RESTORE_PATH = "/scene/restore"


class SceneService:
    """Serves ``place(sample)`` for ``task`` at ``http://host:port/scene/restore``; ``port=0`` picks one."""

    def __init__(self, task: Task, place: Callable[[ResetSample], None], host: str = "127.0.0.1", port: int = 0):
        self.task, self.place = task, place
        self.requests = 0
        self.declines = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                status, reply = service._handle(self.path, self.headers.get("Content-Length"), self.rfile)
                body = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # requests are counted, not printed
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _handle(self, path: str, length: str | None, stream) -> tuple[int, dict]:
        if path != RESTORE_PATH:
            return 404, {"error": f"unknown path {path!r}; POST {RESTORE_PATH}"}
        try:
            n = int(length or 0)
        except ValueError:
            return 400, {"error": "bad Content-Length"}
        if not 0 < n <= MAX_BODY_BYTES:
            return 400, {"error": f"body must be 1..{MAX_BODY_BYTES} bytes of JSON, got {n}"}
        try:
            request = json.loads(stream.read(n))
            task, seed = request["task"], int(request["seed"])
            cube_xy = request.get("cube_xy")
            cube_xy = None if cube_xy is None else [float(cube_xy[0]), float(cube_xy[1])]
        except (ValueError, KeyError, TypeError, IndexError) as e:
            return 400, {"error": f"expected {{\"task\": NAME, \"seed\": INT}}: {e}"}
        if task != self.task.name:
            return 409, {"error": f"the emulator's scene is {self.task.name!r}, asked to restore {task!r}"}
        if self.declines > 0:
            self.declines -= 1
            return 200, {"restored": False}
        sample = self.task.sample_reset(np.random.default_rng(seed))
        if cube_xy is not None:
            sample = ResetSample(np.array([*cube_xy, sample.cube_pos[2]]), 0.0, sample.target_pos)
        self.place(sample)
        self.requests += 1
        return 200, {"restored": True, "cube_pos": [float(v) for v in sample.cube_pos]}

    def start(self) -> "SceneService":
        self._thread = threading.Thread(target=self.server.serve_forever, name="scene-service", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None


__all__ = ["SceneService", "RESTORE_PATH"]
