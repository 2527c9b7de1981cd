"""Entry point of the benchmark's child processes: ``python bench/_worker.py KIND CONFIG``.

KIND picks the module, so a process imports only what it measures (our packages, or
oslo + eventlet, never both). CONFIG is a JSON object.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    kind, config = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if kind == "ours":
        import _ours

        _ours.main(config)
    elif kind == "kombu":
        import _kombu

        _kombu.main(config)
    elif kind == "kombu-server":
        import _kombu

        _kombu.serve(config)
    elif kind == "sqla":
        import _sqla

        _sqla.main(config)
    elif kind in ("openstack", "ovo-local"):
        import _openstack

        _openstack.main(config)
    elif kind == "openstack-server":
        import _openstack

        _openstack.serve(config)
    elif kind == "profiled-conductor":
        import _stages

        _stages.serve_conductor(config)
    elif kind == "profiled-client":
        import _stages

        _stages.serve_client(config)
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")


if __name__ == "__main__":
    main()
