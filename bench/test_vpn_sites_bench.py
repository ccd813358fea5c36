"""Site to site through two fastpath gateways (bench/vpn_sites.py) under pytest-benchmark:
fastpath's packet generator on site A's VLAN 10 host blasts 64 B and 1400 B frames at
site B's VLAN 10 host, and the sink there counts what arrives -- over VXLAN in ESP keyed
by IKEv2 (AES-GCM, options:psk), over VXLAN in ESP with manual keys, over plain VXLAN, and
host to host over one veth pair (the raw ceiling), all in one topology built once for the
module.

With --benchmark-enable: 3 s per figure (a contended trial is repeated, as in bench/e2e.py);
extra_info carries packets (delivered), mpps, gbps, offered_mpps, loss and, for the
tunnels, ratio_to_ceiling (ratio_to_vxlan for the ESP paths, ratio_to_manual_esp for the
IKEv2-keyed VPN) against baselines measured in the same run. With --benchmark-disable (the suite's default) the same paths run for 1 s
each. Either way the checks are structural, never about speed: frames went through, each
one byte for byte what was sent, untagged, and over ESP every one was decrypted by an
SA at site B.

TCP: iperf3, one stream, for 1 s (3 s with --benchmark-enable), from a VLAN 10 host at site A
to one at site B, both at MTU 1500 with default offloads, over the IKEv2-keyed VPN, over
manual-key ESP and over plain VXLAN (tunnel ports with options:tcp_mss_clamp=auto) and over
the hosts' own veth pair (the ceiling); extra_info carries gbps, packets (frames the
gateways took from the hosts, a super-frame counted once), the sender's MSS, the clamped
SYNs and the ratios to the ceiling, to plain VXLAN (ESP paths) and to manual-key ESP (the
IKEv2-keyed VPN). The checks: TCP flows, and through a tunnel the gateways
clamped the SYNs so that the sender's MSS fits the tunnel.
"""
import pytest

import vpn_sites

pytestmark = pytest.mark.root

MEASURED = {}           # (path, size) -> the trial's result, for the ratios
MEASURED_TCP = {}       # path -> the TCP run's result


@pytest.fixture(scope="module")
def sites(request):
    bs = getattr(request.config, "_benchmarksession", None)
    disabled = bs.disabled if bs is not None else True
    args = vpn_sites.parse_args(["--short"] if disabled else ["--trials", "1", "--seconds", "3"])
    MEASURED.clear()
    MEASURED_TCP.clear()
    with vpn_sites.Bench(args) as bench:
        yield bench
    rows = bench.summary()
    print("\n" + vpn_sites.markdown(rows))
    if bench.tcp_results:
        print("\n" + vpn_sites.tcp_markdown(bench.tcp_summary()))


def baseline(sites, path, size):
    """The same run's figure for path (measured now if no test has yet)."""
    if (path, size) not in MEASURED:
        MEASURED[(path, size)] = sites.measure(path, size)
    return MEASURED[(path, size)]


def figure(benchmark, sites, path, size):
    r = benchmark.pedantic(sites.measure, args=(path, size), rounds=1, iterations=1)
    MEASURED[(path, size)] = r
    assert r["sent"] > 0, r
    assert r["received"] > 0, f"{path} delivered nothing at {size} B: {r}"
    # whatever arrived is what the generator sent, untouched and untagged
    assert r["unexpected"] == 0 and r["tagged"] == 0, r
    assert r["expected"] == r["received"] <= r["sent"], r
    pps = r["delivered_pps"]
    info = benchmark.extra_info
    info["packets"] = r["received"]
    info["mpps"] = round(pps / 1e6, 4)
    info["gbps"] = round(pps * size * 8 / 1e9, 4)
    info["offered_mpps"] = round(r["offered_pps"] / 1e6, 4)
    info["loss"] = round(r["loss"], 4)
    info["frame_bytes_with_fcs"] = size
    info["loadavg"] = r["loadavg"]
    if path != "ceiling":
        ceil = baseline(sites, "ceiling", size)
        info["ratio_to_ceiling"] = round(pps / ceil["delivered_pps"], 4) if ceil["delivered_pps"] else None
        info["gateways"] = {g: {"cpu": v.get("cpu"), "errors": v["errors"]}
                            for g, v in r["extra"]["gateways"].items()}
    for base, key in vpn_sites.VERSUS.get(path, ()):
        b = baseline(sites, base, size)
        info[key] = round(pps / b["delivered_pps"], 4) if b["delivered_pps"] else None
    if path in ("vpn", "esp"):
        # every delivered frame was decrypted by an inbound SA at site B
        assert r["extra"]["esp_in_at_b"] >= r["received"], r["extra"]
    return r


def test_raw_veth_ceiling_64b(benchmark, sites):
    figure(benchmark, sites, "ceiling", 64)


def test_vxlan_site_to_site_64b(benchmark, sites):
    figure(benchmark, sites, "vxlan", 64)


def test_manual_esp_site_to_site_64b(benchmark, sites):
    figure(benchmark, sites, "esp", 64)


def test_ikev2_vpn_site_to_site_64b(benchmark, sites):
    figure(benchmark, sites, "vpn", 64)


def test_raw_veth_ceiling_1400b(benchmark, sites):
    figure(benchmark, sites, "ceiling", 1400)


def test_vxlan_site_to_site_1400b(benchmark, sites):
    figure(benchmark, sites, "vxlan", 1400)


def test_manual_esp_site_to_site_1400b(benchmark, sites):
    figure(benchmark, sites, "esp", 1400)


def test_ikev2_vpn_site_to_site_1400b(benchmark, sites):
    figure(benchmark, sites, "vpn", 1400)


def tcp_baseline(sites, path):
    if path not in MEASURED_TCP:
        MEASURED_TCP[path] = sites.measure_tcp(path)
    return MEASURED_TCP[path]


def tcp_figure(benchmark, sites, path):
    r = benchmark.pedantic(sites.measure_tcp, args=(path,), rounds=1, iterations=1)
    MEASURED_TCP[path] = r
    assert r["error"] is None and r["gbps"] > 0.01, r
    info = benchmark.extra_info
    info["gbps"] = round(r["gbps"], 4)
    info["seconds"] = r["seconds"]
    info["loadavg"] = r["loadavg"]
    for k in ("mss", "retransmits", "packets", "clamped", "mss_clamp"):
        if r.get(k) is not None:
            info[k] = r[k]
    if path != "ceiling":
        # the gateways lowered the MSS of the SYNs (iperf3's control and data connections,
        # both ways) and the sender's segments fit the tunnel
        assert r["packets"] > 0 and r["clamped"] >= 2, r
        clamp = int(str(r["mss_clamp"]["site-a"]).split("/")[0])
        assert r["mss"] <= clamp, r
        ceil = tcp_baseline(sites, "ceiling")
        info["ceiling_gbps"] = round(ceil["gbps"], 4)
        info["ratio_to_ceiling"] = round(r["gbps"] / ceil["gbps"], 4) if ceil["gbps"] else None
    for base, key in vpn_sites.VERSUS.get(path, ()):
        b = tcp_baseline(sites, base)
        info[f"{base}_gbps"] = round(b["gbps"], 4)
        info[key] = round(r["gbps"] / b["gbps"], 4) if b["gbps"] else None
    return r


def test_tcp_raw_veth_ceiling(benchmark, sites):
    tcp_figure(benchmark, sites, "ceiling")


def test_tcp_vxlan_site_to_site_mss_clamp(benchmark, sites):
    tcp_figure(benchmark, sites, "vxlan")


def test_tcp_manual_esp_site_to_site_mss_clamp(benchmark, sites):
    tcp_figure(benchmark, sites, "esp")


def test_tcp_ikev2_vpn_site_to_site_mss_clamp(benchmark, sites):
    tcp_figure(benchmark, sites, "vpn")
