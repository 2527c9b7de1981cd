"""The README's snippets run as written (only the broker URL swapped for an in-process one)."""

from __future__ import annotations

import re
from pathlib import Path

import conductor
from objects import base, remoting

README = Path(__file__).resolve().parents[1] / "README.md"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_compute_side_snippet_runs_on_a_freshly_upgraded_database(tmp_path: Path) -> None:
    [snippet] = [b for b in python_blocks() if "conductor.connect(" in b]
    assert BROKER in snippet
    service = conductor.Conductor("memory://readme", f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    service.start()
    scope: dict[str, object] = {}
    try:
        exec(compile(snippet.replace(BROKER, "memory://readme"), "README.md", "exec"), scope)
        on_node = scope["on_node"]
        assert len(on_node) == 50  # type: ignore[arg-type]
        assert all(inst.host == "node-7" for inst in on_node)  # type: ignore[attr-defined]
    finally:
        api = remoting.get_indirection_api()
        if isinstance(api, conductor.ConductorAPI):
            api.close()
        base.set_indirection_api(None)
        service.stop()
