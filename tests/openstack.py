"""The real oslo.messaging (rabbit driver) on the test broker, for the interop tests.

Each :class:`Oslo` builds its own ``cfg.ConfigOpts`` and oslo transport; ``close()``
cleans the transport up and deletes the reply and fanout queues oslo declared.
"""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.brokers import delete_queues

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet's deprecation warning, imported by oslo
    import oslo_messaging as om
    from oslo_config import cfg
    from oslo_messaging import opts as om_opts

__all__ = ["Oslo", "om", "oslo_url"]


def oslo_url(url: str) -> str:
    """The test broker's URL as oslo.messaging writes it (``rabbit://``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="rabbit", query=""))


class Oslo:
    """One oslo.messaging RPC transport on the broker at ``url`` (ours, amqp://...)."""

    def __init__(
        self,
        url: str,
        control_exchange: str | None = None,
        allowed_remote_exmods: list[str] | None = None,
    ) -> None:
        self.conf = cfg.ConfigOpts()
        self.conf([], project="conductor-tests", default_config_files=[], default_config_dirs=[])
        # Some options (tracing, metrics) oslo.messaging registers on the global CONF only.
        for group, opts in om_opts.list_opts():
            self.conf.register_opts(opts, group=group)
        for group in ("oslo_messaging_tracing", "oslo_messaging_metrics"):
            if group in cfg.CONF:
                opts = [info["opt"] for info in cfg.CONF[group]._group._opts.values()]
                self.conf.register_opts(opts, group=group)
        self.transport = om.get_rpc_transport(
            self.conf, url=oslo_url(url), allowed_remote_exmods=allowed_remote_exmods
        )
        # Reply and fanout queues expire soon after the test even if a delete is missed.
        self.conf.set_override("rabbit_transient_queues_ttl", 10, group="oslo_messaging_rabbit")
        if control_exchange is not None:
            self.conf.set_override("control_exchange", control_exchange)
            self.transport._driver._default_exchange = control_exchange
        self.url = url
        self.servers: list[Any] = []
        self.queues: list[str] = []

    def client(self, topic: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 10)
        target_kwargs = {
            k: kwargs.pop(k) for k in ("server", "fanout", "version", "namespace") if k in kwargs
        }
        return om.get_rpc_client(self.transport, om.Target(topic=topic, **target_kwargs), **kwargs)

    def server(self, topic: str, endpoints: list[Any], server: str = "s1", **kwargs: Any) -> Any:
        made = om.get_rpc_server(
            self.transport,
            om.Target(topic=topic, server=server),
            endpoints,
            **kwargs,
        )
        made.start()
        self.servers.append(made)
        return made

    def close(self) -> None:
        for server in self.servers:
            server.stop()
            server.wait()
        driver = self.transport._driver
        reply_q = getattr(driver, "_reply_q", None)
        self.transport.cleanup()
        names = list(self.queues)
        if reply_q:
            names.append(reply_q)
        if names:
            delete_queues(self.url, names)
