"""IKEv2 setup costs (bench/ike.py) under pytest-benchmark.

- IKE handshakes per second as responder: IKE_SA_INIT + IKE_AUTH (PSK, with its
  CHILD_SA) between two in-process IkeSa objects, the time inside the responder's calls;
  baselines from the same run: the same handshakes' initiator side, and ECP-256 key
  generation + exchange (the DH a responder cannot avoid), per second.
- The time from site B's add-port to the first ESP frame between two `fastpath run`
  gateways (root), keyed by IKEv2 and, the baseline in the same run, by manual keys.

extra_info carries the rate measured (handshakes_per_s, or seconds for the first ESP), the
count behind it and the ratio to the baseline. The checks are structural: every handshake
completes with its CHILD_SA, and ESP flows after either add-port.
"""
import pytest

import ike

MEASURED = {}
HANDSHAKES = 100


def _handshake_figures(benchmark):
    n = HANDSHAKES if not benchmark.disabled else 5
    r = benchmark.pedantic(ike.handshakes, args=(n,), rounds=1, iterations=1)
    MEASURED["handshakes"] = r
    assert r["handshakes"] == n and r["responder_per_s"] > 0 and r["initiator_per_s"] > 0
    return r


def test_ike_responder_handshakes_per_second(benchmark):
    r = _handshake_figures(benchmark)
    if "ecdh" not in MEASURED:
        MEASURED["ecdh"] = ike.ecdh_p256(r["handshakes"])
    info = benchmark.extra_info
    info["handshakes"] = r["handshakes"]
    info["handshakes_per_s"] = round(r["responder_per_s"], 1)
    info["ms_per_handshake"] = round(r["responder_ms"], 3)
    info["initiator_handshakes_per_s"] = round(r["initiator_per_s"], 1)
    info["ratio_to_initiator"] = round(r["responder_per_s"] / r["initiator_per_s"], 3)
    info["ecdh_p256_per_s"] = round(MEASURED["ecdh"]["per_s"], 1)
    info["ratio_to_ecdh_p256"] = round(r["responder_per_s"] / MEASURED["ecdh"]["per_s"], 3)


def test_ecdh_p256_keygen_and_exchange_per_second(benchmark):
    n = HANDSHAKES if not benchmark.disabled else 5
    r = benchmark.pedantic(ike.ecdh_p256, args=(n,), rounds=1, iterations=1)
    MEASURED["ecdh"] = r
    benchmark.extra_info["ops"] = r["ops"]
    benchmark.extra_info["ops_per_s"] = round(r["per_s"], 1)


@pytest.mark.root
def test_add_port_to_first_esp_seconds(benchmark):
    trials = 5 if not benchmark.disabled else 1
    r = benchmark.pedantic(ike.first_esp, args=(trials,), rounds=1, iterations=1)
    assert len(r["ike"]) == len(r["manual"]) == trials
    assert all(t > 0 for t in r["ike"] + r["manual"])
    info = benchmark.extra_info
    info["trials"] = trials
    info["ike_seconds"] = round(r["ike_median"], 4)
    info["manual_keys_seconds"] = round(r["manual_median"], 4)
    info["ike_all"] = [round(t, 4) for t in r["ike"]]
    info["manual_all"] = [round(t, 4) for t in r["manual"]]
    info["ratio_to_manual_keys"] = round(r["ratio"], 3)
