"""A command in a pod's container, its stdout streamed to a file: for `rayguard profile fetch`,
which runs with the user's own credentials (it needs `pods/exec` create and `pods` list).

The operator never execs: this is kept out of `KubeApi`, whose calls are the rights the chart
grants (tests/unit/deploy/test_chart.py derives them from that class).
"""

from __future__ import annotations

from typing import BinaryIO

from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream, ws_client
from websocket import WebSocketException

from rayguard_operator.errors import KubeApiError
from rayguard_operator.kube.api import KubeApi, _error

READ_TIMEOUT_S = 1.0
STDERR_KEPT = 4096


def exec_to_file(api: KubeApi, namespace: str, pod: str, container: str, command: list[str],
                 out: BinaryIO) -> tuple[int | None, str]:
    """Run `command` in the container, writing its stdout (bytes) to `out`. Returns the exit
    status (None when the server did not say) and the first 4 KiB of stderr."""
    what = f"exec in Pod {namespace}/{pod}"
    try:
        client = stream(api.core.connect_get_namespaced_pod_exec, pod, namespace, command=command,
                        container=container, stdin=False, stdout=True, stderr=True, tty=False,
                        _preload_content=False, binary=True)
    except ApiException as error:
        raise _error("create", what, error) from None
    # The client keeps a copy of all stdout for read_all() unless told otherwise, and stream()
    # does not pass that option on: an archive of up to the pod's profile cap stays out of memory.
    if hasattr(ws_client, "_IgnoredIO"):
        client._all = ws_client._IgnoredIO()
    stderr = b""
    try:
        while client.is_open():
            client.update(timeout=READ_TIMEOUT_S)
            if client.peek_stdout():
                out.write(client.read_stdout())
            if client.peek_stderr():
                stderr = (stderr + client.read_stderr())[:STDERR_KEPT]
        out.write(client.read_stdout() or b"")  # what arrived with the close
        try:
            status = client.returncode
        except (KeyError, IndexError, TypeError, ValueError):
            status = None
    except (OSError, WebSocketException) as error:
        raise KubeApiError("create", what, None, str(error)) from None
    finally:
        client.close()
    return status, stderr.decode(errors="replace")
