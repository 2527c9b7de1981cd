"""oslo.messaging's envelope (transport._oslo) checked against oslo.messaging's own
functions, and the URL options that select it. No broker needed."""

from __future__ import annotations

import json
import sys

import pytest

import transport
from tests.openstack import om, om_amqp, om_common
from transport import _oslo, _wire
from transport.exceptions import MessageDeliveryFailure


def test_url_options_select_the_oslo_wire_and_control_exchange() -> None:
    tp = transport.get_transport("memory://o?wire=oslo&control_exchange=nova")
    try:
        assert tp.config.wire == "oslo"
        assert tp.config.control_exchange == "nova"
        assert tp.config.batch_max_messages == 1  # oslo reads one envelope per message
    finally:
        tp.cleanup()
    defaults = transport.TransportConfig()
    assert (defaults.wire, defaults.control_exchange) == ("native", "openstack")


@pytest.mark.parametrize(
    ("query", "match"),
    [("wire=pickle", "wire"), ("control_exchange=a b", "control_exchange")],
)
def test_bad_oslo_url_options_are_refused(query: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        transport.get_transport(f"memory://o?{query}")


def test_a_request_we_encode_is_what_oslo_decodes() -> None:
    body = _oslo.encode_request(
        "abc", "add", {"a": 1}, {"user_id": "u"}, "ns", "1.2", "reply_x", 4, None
    )
    message = om_common.deserialize_msg(json.loads(body))
    ctxt = om_amqp.unpack_context(message)
    assert message == {"method": "add", "args": {"a": 1}, "namespace": "ns", "version": "1.2",
                       "_unique_id": message["_unique_id"]}  # fmt: skip
    assert (ctxt.msg_id, ctxt.reply_q, ctxt.client_timeout) == ("abc", "reply_x", 4)
    assert ctxt.to_dict()["user_id"] == "u"


def test_an_oslo_request_becomes_ours() -> None:
    message = {"method": "add", "args": {"a": 1}, "_msg_id": "m1", "_reply_q": "reply_q1",
               "_timeout": 6, "_unique_id": "u1"}  # fmt: skip
    om_amqp.pack_context(message, {"user_id": "u", "project_id": "p"})
    native = _oslo.request_to_native(om_common.serialize_msg(message))
    assert native == {
        "id": "m1",
        "method": "add",
        "args": {"a": 1},
        "ctxt": {"user_id": "u", "project_id": "p"},
        "ns": None,
        "ver": None,
        "reply_to": _oslo.REPLY_PREFIX + "reply_q1",
        "hb": 3.0,  # oslo servers beat every _timeout / 2
    }
    cast = dict(message, _msg_id=None)
    assert _oslo.request_to_native(om_common.serialize_msg(cast))["id"] == "u1"


def test_our_failure_is_what_oslo_rebuilds_without_a_traceback() -> None:
    exc = _wire.serialize_exception(ValueError("bad value"))
    body = _oslo.encode_reply({"id": "m1", "t": "e", "exc": exc})
    reply = om_common.deserialize_msg(json.loads(body))
    assert (reply["_msg_id"], reply["ending"], reply["result"]) == ("m1", True, None)
    assert "tb" not in json.loads(reply["failure"])
    rebuilt = om_common.deserialize_remote_exception(reply["failure"], [])
    assert isinstance(rebuilt, ValueError) and str(rebuilt).strip() == "bad value"
    refused = _wire.serialize_exception(MessageDeliveryFailure(reason="x"))
    body = _oslo.encode_reply({"id": "m", "t": "e", "exc": refused})
    failure = om_common.deserialize_msg(json.loads(body))["failure"]
    remote = om_common.deserialize_remote_exception(failure, [])
    assert isinstance(remote, om.RemoteError) and remote.exc_type == "MessageDeliveryFailure"


def test_results_and_heartbeats_are_what_oslo_waits_for() -> None:
    result = om_common.deserialize_msg(
        json.loads(_oslo.encode_reply({"id": "m1", "t": "r", "v": [1, "x"]}))
    )
    assert (result["result"], result["failure"], result["ending"]) == ([1, "x"], None, True)
    beat = om_common.deserialize_msg(json.loads(_oslo.encode_reply({"id": "m1", "t": "hb"})))
    assert (beat["result"], beat["failure"], beat["ending"]) == (None, None, False)


def test_oslo_replies_become_ours() -> None:
    def reply(**fields: object) -> dict[str, object]:
        wrapped: dict[str, object] = om_common.serialize_msg(
            {"_msg_id": "m1", "_unique_id": "u", **fields}
        )
        return wrapped

    assert _oslo.reply_to_native(reply(result=5, failure=None, ending=True)) == {
        "id": "m1", "t": "r", "v": 5,
    }  # fmt: skip
    assert _oslo.reply_to_native(reply(result=None, failure=None, ending=False))["t"] == "hb"
    try:
        raise KeyError("k")
    except KeyError:
        failure = om_common.serialize_remote_exception(sys.exc_info())
    native = _oslo.reply_to_native(reply(result=None, failure=failure, ending=True))
    assert native["t"] == "e" and "tb" not in native["exc"]
    assert isinstance(_wire.deserialize_exception(native["exc"], ["builtins"]), KeyError)
