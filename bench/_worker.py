"""Entry point of the benchmark's child processes: ``python -m bench._worker KIND CONFIG``.

KIND picks the module, so a process imports only what it measures (our packages, or
oslo + eventlet, never both). CONFIG is a JSON object.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    kind, config = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if kind == "ours":
        from bench import _ours

        _ours.main(config)
    elif kind == "kombu":
        from bench import _kombu

        _kombu.main(config)
    elif kind == "kombu-server":
        from bench import _kombu

        _kombu.serve(config)
    elif kind == "lean":
        from bench import _lean

        _lean.main(config)
    elif kind == "lean-server":
        from bench import _lean

        _lean.serve(config)
    elif kind == "sqla":
        from bench import _sqla

        _sqla.main(config)
    elif kind in ("openstack", "ovo-local"):
        from bench import _openstack

        _openstack.main(config)
    elif kind == "openstack-server":
        from bench import _openstack

        _openstack.serve(config)
    elif kind == "profiled-conductor":
        from bench import _stages

        _stages.serve_conductor(config)
    elif kind == "profiled-client":
        from bench import _stages

        _stages.serve_client(config)
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")


if __name__ == "__main__":
    main()
