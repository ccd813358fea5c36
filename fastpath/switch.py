"""Switch: bridges and ports in Open vSwitch's vocabulary, on top of the node graph.

The standard graph, as a diagram (build_graph below is this picture):

  <port>-input -> ethernet-input -> [flow-classify] -> vlan-input -> l2-learn -> l2-fwd
                                          |                                      |    \\
                                          |                                      |   l2-flood
                                          v                                      v    /
                              interface-output <------------------------- vlan-output
                                          |
                                   <port>-output

Everything here is control plane: it validates configuration, writes the C tables the
nodes read (L2Tables, Fdb, FlowTable) and creates or removes interface nodes. Nothing in
this file runs per packet.

Workers (Switch(workers=N)): every worker has its own graph -- its own buffer pool,
queues and node instances -- built from the same picture, over one set of tables: the
L2Tables, each bridge's Fdb (lock-free lookups, see fdb.pxd) and FlowTable are shared, as
VPP's workers share the l2fib. Worker 0 is the thread that runs control (the daemon's
main loop); the others run Graph.run_worker in threads of their own. Every change below
is made under the worker barrier (the workers wait between two vectors), so a worker
never sees a half-made change; with one worker the barrier costs nothing.
"""
import functools
import os
import threading
import time

from fastpath.graph.graph import Barrier, Graph
from fastpath.nodes.bridge import L2Tables, MODES
from fastpath.nodes.ethernet import EthernetInput
from fastpath.nodes.fdb import Fdb
from fastpath.nodes.flow import FlowClassify
from fastpath.nodes.flowtable import FlowTable, groups_of
from fastpath.nodes.interface import InterfaceOutput
from fastpath.nodes.gso import Gso
from fastpath.nodes.l2 import L2Flood, L2Forward, L2Learn
from fastpath.nodes.vlan import VlanInput, VlanOutput
from fastpath.nodes.ip4 import Ip4Input, Ip4UdpInput
from fastpath.nodes.vxlan import VxlanEncap, VxlanInput, encap_overhead
from fastpath.nodes.mss import MssClampInput, MssClampOutput, clamp_values, parse_clamp
from fastpath.nodes.arp import ArpInput, arp_frame
from fastpath.nodes.esp import EspDecrypt, EspEncrypt
from fastpath.nodes.ike_input import IkeInput
from fastpath.nodes.packet_in import PacketIn
from fastpath import ports as port_types

MAX_BRIDGES = 256
MAX_PORTS = 4096
SECRET_OPTIONS = ("psk", "key_out", "key_in")     # never printed


class ConfigError(ValueError):
    """A configuration request that cannot be applied; the message says why, in one line."""


def under_barrier(method):
    """A configuration change: the workers are stopped between vectors while it runs."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.barrier:
            return method(self, *args, **kwargs)
    return wrapper


class Each:
    """One node name across every worker's graph: a method call is made on each copy
    (returning worker 0's result), e.g. sw.each("vxlan-encap").set_next_hop(...)."""

    def __init__(self, nodes):
        self.nodes = nodes

    def __getattr__(self, attr):
        methods = [getattr(n, attr) for n in self.nodes]

        def call(*args, **kwargs):
            results = [m(*args, **kwargs) for m in methods]
            return results[0]
        return call


def build_graph(graph, tables, worker=0):
    """The switch, then the VPN underlay:
    uplink-input -> ethernet-input -> ip4-input -> esp-decrypt -> ip4-udp-input -> vxlan-input
    -> ethernet-input (as from the tunnel port); a tunnel port's output is vxlan-encap ->
    [esp-encrypt] -> interface-output -> uplink-output. ARP on uplinks: arp-input. A tunnel
    with options:tcp_mss_clamp has tcp-mss-clamp-input after vxlan-input and
    tcp-mss-clamp-output before vxlan-encap."""
    flows = FlowClassify(tables)
    flows.worker = worker
    for node in (EthernetInput(tables), flows, VlanInput(tables),
                 L2Learn(tables), L2Forward(tables), L2Flood(tables), VlanOutput(tables),
                 InterfaceOutput(), Gso(),
                 Ip4Input(), ArpInput(), Ip4UdpInput(), VxlanInput(), VxlanEncap(),
                 EspEncrypt(), EspDecrypt(), IkeInput(), MssClampInput(), MssClampOutput(),
                 PacketIn(tables)):
        graph.add(node)


def parse_vlan(value, what="tag"):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {value!r} is not a VLAN id") from None
    if not 0 <= v <= 4095:
        raise ConfigError(f"{what}: {v} out of range 0..4095")
    return v


def parse_trunks(value):
    """'10,20' / [10, 20] / '' -> sorted list of VLANs ([] = all)."""
    if value in (None, "", "[]"):
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[]").split(",")
    out = set()
    for item in items:
        item = str(item).strip()
        if "-" in item:
            lo, hi = item.split("-", 1)
            out.update(range(parse_vlan(lo, "trunks"), parse_vlan(hi, "trunks") + 1))
        elif item:
            out.add(parse_vlan(item, "trunks"))
    return sorted(out)


class Port:
    def __init__(self, name, type, sw_if_index, ofport, bridge):
        self.name = name
        self.type = type
        self.sw_if_index = sw_if_index
        self.ofport = ofport
        self.bridge = bridge
        self.tag = None
        self.trunks = []
        self.vlan_mode = None
        self.options = {}
        self.mtu_request = None   # as OVS's Interface column: the MTU asked for, or None
        self.mtu = None           # the MTU in effect (ports.mtu_of)
        self.io = None            # the interface object (socket, TAP, in-memory), worker 0's
        self.ios = []             # every worker's
        self.n_workers = 1
        self.address = None       # L3 (uplink) ports: ipaddress.IPv4Interface
        self.gateway = None
        self.mac = None
        self.admin_up = True      # OpenFlow PORT_MOD's OFPPC_PORT_DOWN: nothing is sent on it
        self.no_packet_in = False # OpenFlow OFPPC_NO_PACKET_IN: its frames reach no controller

    @property
    def effective_mode(self):
        return self.vlan_mode or ("access" if self.tag is not None else "trunk")

    def settings(self):
        s = {"type": self.type, "ofport": self.ofport}
        if self.tag is not None:
            s["tag"] = self.tag
        if self.trunks:
            s["trunks"] = list(self.trunks)
        if self.vlan_mode:
            s["vlan_mode"] = self.vlan_mode
        if self.mtu_request:
            s["mtu_request"] = self.mtu_request
        s.update({f"options:{k}": v for k, v in self.options.items()})
        return s


class Bridge:
    def __init__(self, name, index, mac_aging_time=300.0, mac_table_size=8192, resolve=None,
                 workers=1):
        self.name = name
        self.index = index
        self.ports = {}
        self.fdb = Fdb(max_entries=mac_table_size, aging_time=mac_aging_time)
        self.flows = FlowTable(self.resolve_port, workers)
        # OpenFlow (fastpath.openflow): controllers, fail-mode, datapath id
        self.controllers = []           # targets, as set-controller gave them
        self.agent = None               # its openflow.agent.Agent while it has controllers
        self.fail_mode = "standalone"
        self.fail_open = False          # standalone, controllers set, none connected: NORMAL
        self.datapath_id = None         # None: derived from the name (default_datapath_id)
        self.protocols = "OpenFlow13"

    def resolve_port(self, ref):
        """A port name or OpenFlow number -> sw_if_index (flow syntax: in_port, output)."""
        for p in self.ports.values():
            if p.name == ref or (isinstance(ref, int) and p.ofport == ref):
                return p.sw_if_index
        raise ConfigError(f"bridge {self.name} has no port {ref!r}")

    def port_by_index(self, sw_if_index):
        for p in self.ports.values():
            if p.sw_if_index == sw_if_index:
                return p
        return None


class Switch:
    def __init__(self, n_buffers=16384, clock=time.monotonic, workers=1):
        if not 1 <= int(workers) <= 64:
            raise ConfigError(f"workers: {workers} is not in 1..64")
        self.clock = clock
        self.graphs = [Graph(n_buffers=n_buffers) for _ in range(int(workers))]
        self.graph = self.graphs[0]       # worker 0: the control thread's
        self.barrier = Barrier(len(self.graphs))
        if len(self.graphs) > 1:
            self.graph.barrier = self.barrier     # its timers and control fds stop the others
        self.threads = []
        self.tables = L2Tables()
        self.tables.now = clock()
        for w, g in enumerate(self.graphs):
            build_graph(g, self.tables, w)
        self.bridges = {}
        self.ports = {}                 # every bridge port by name
        self.uplinks = {}               # L3 ports (VPN underlay) by name
        self.arp = self.graph["arp-input"]
        self.arp.on_learn = self._neighbour_learned
        self.graph.add_timer(1.0, lambda _now: self.tick())
        self.port_listeners = []        # callback("add"|"delete", port): the OpenFlow agents

    # ---- workers ----

    @property
    def n_workers(self):
        return len(self.graphs)

    def each(self, name):
        return Each([g[name] for g in self.graphs if name in g])

    def nodes(self, name):
        """The node called name in every worker's graph that has one."""
        return [g[name] for g in self.graphs if name in g]

    def start_workers(self, cpus=None, setup=None):
        """Run workers 1..N-1 in threads (worker 0 is the caller's Graph.run()). cpus: a
        list of CPU numbers, one per worker, worker 0 first, to pin each to its own.
        setup: called first thing in each new worker thread (e.g. to set its priority)."""
        if cpus is not None and len(cpus) < len(self.graphs):
            raise ConfigError(f"cpus: {len(cpus)} CPUs for {len(self.graphs)} workers")
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[0]})       # the calling thread: worker 0
        for w, g in enumerate(self.graphs[1:], 1):
            t = threading.Thread(target=self._worker_main, args=(w, g, cpus[w] if cpus else None, setup),
                                 name=f"fastpath-worker-{w}", daemon=True)
            self.threads.append(t)
            t.start()

    def _worker_main(self, w, graph, cpu, setup):
        if setup is not None:
            setup()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        try:
            graph.run_worker(self.barrier, w)
        except BaseException:
            import logging
            logging.getLogger("fastpath").exception("worker %d stopped", w)
            raise

    def stop_workers(self):
        for g in self.graphs[1:]:
            g.stop()
        for t in self.threads:
            t.join()
        self.threads = []

    def runtime(self):
        """`show runtime` rows: each node summed over the workers ("worker": "all"), then,
        with several workers, each worker's own rows."""
        total = {}
        per_worker = []
        for w, g in enumerate(self.graphs):
            for r in g.runtime():
                per_worker.append({**r, "worker": w})
                t = total.get(r["name"])
                if t is None:
                    total[r["name"]] = {**r, "worker": "all"}
                else:
                    for k in ("calls", "vectors", "packets", "ns"):
                        t[k] += r[k]
        for t in total.values():
            t["vectors_per_call"] = t["packets"] / t["calls"] if t["calls"] else 0.0
            t["ns_per_packet"] = t["ns"] / t["packets"] if t["packets"] else 0.0
        rows = list(total.values())
        if len(self.graphs) > 1:
            rows += per_worker
        return rows

    def errors(self):
        """[(count, node, reason, text)] summed over the workers."""
        total = {}
        for g in self.graphs:
            for count, node, reason, text in g.errors():
                key = (node, reason, text)
                total[key] = total.get(key, 0) + count
        return [(c, *k) for k, c in total.items()]

    def clear_runtime(self):
        for g in self.graphs:
            g.clear_runtime()

    # ---- time ----

    @under_barrier
    def tick(self, now=None):
        """Advance the switch clock and age the MAC tables (off the packet path)."""
        now = self.clock() if now is None else now
        self.tables.now = now
        for br in self.bridges.values():
            br.fdb.age(now)
        self.refresh_mtus()
        self.resolve_tunnels()

    # ---- bridges ----

    @under_barrier
    def add_br(self, name, **other_config):
        if name in self.bridges:
            raise ConfigError(f"bridge {name} already exists")
        if not name or any(c.isspace() for c in name):
            raise ConfigError(f"bad bridge name {name!r}")
        used = {b.index for b in self.bridges.values()}
        free = [i for i in range(MAX_BRIDGES) if i not in used]
        if not free:
            raise ConfigError(f"at most {MAX_BRIDGES} bridges")
        br = Bridge(name, free[0], workers=len(self.graphs))
        self.bridges[name] = br
        self.tables.set_bridge(br.index, br.fdb, br.flows)
        self.set_bridge(name, **other_config)
        return br

    @under_barrier
    def set_bridge(self, name, **other_config):
        br = self.bridge(name)
        for key, value in other_config.items():
            key = key.replace("other_config:", "").replace("_", "-")
            try:
                if key == "mac-aging-time":
                    br.fdb.aging_time = float(value)
                    if br.fdb.aging_time <= 0:
                        raise ValueError
                elif key == "mac-table-size":
                    if int(value) < 1:
                        raise ValueError
                    br.fdb.set_max_entries(int(value))
                elif key == "datapath-id":
                    dpid = int(str(value), 16) if value not in (None, "", "[]") else None
                    if dpid is not None and not 0 <= dpid < 1 << 64:
                        raise ValueError
                    br.datapath_id = dpid
                elif key == "protocols":
                    if value != "OpenFlow13":
                        raise ConfigError(f"protocols: {value!r}: only OpenFlow13 is spoken")
                    br.protocols = value
                else:
                    raise ConfigError(f"unknown bridge setting {key!r}")
            except ValueError:
                raise ConfigError(f"bad value {value!r} for {key}") from None

    @under_barrier
    def del_br(self, name):
        br = self.bridge(name)
        if br.agent is not None:
            br.agent.close()
            br.agent = None
        for pname in list(br.ports):
            self.del_port(pname)
        self.tables.clear_bridge(br.index)
        del self.bridges[name]

    def bridge(self, name):
        try:
            return self.bridges[name]
        except KeyError:
            raise ConfigError(f"no bridge named {name}") from None

    # ---- ports ----

    @under_barrier
    def add_port(self, br_name, ifname, type="afpacket", tag=None, trunks=None, vlan_mode=None,
                 ofport_request=None, mtu_request=None, **options):
        br = self.bridge(br_name)
        if ifname in self.ports:
            raise ConfigError(f"port {ifname} already exists (in bridge {self.ports[ifname].bridge.name})")
        if ifname in self.uplinks:
            raise ConfigError(f"port {ifname} already exists (an L3 uplink)")
        if type not in port_types.TYPES:
            raise ConfigError(f"unknown port type {type!r} (known: {', '.join(sorted(port_types.TYPES))})")
        sw_if_index = self._free_sw_if_index()
        used_of = {p.ofport for p in br.ports.values()}
        if ofport_request is not None:
            ofport = int(ofport_request)
            if ofport in used_of or not 1 <= ofport <= 0xfeff:
                raise ConfigError(f"ofport {ofport} is taken or out of range")
        else:
            ofport = next(i for i in range(1, 0xff00) if i not in used_of)
        port = Port(ifname, type, sw_if_index, ofport, br)
        options = {k.replace("options:", ""): v for k, v in options.items()}
        self._set_vlan(port, tag, trunks, vlan_mode)
        port.options = options
        port.mtu_request = self._mtu_request(port, mtu_request)
        if type == "vxlan":
            self._check_tunnel(port)
        elif "tcp_mss_clamp" in options:
            raise ConfigError(f"port {ifname}: options:tcp_mss_clamp is for vxlan tunnel ports")
        # the interface itself: may fail (no such device...) before anything is changed
        self._open_io(port)
        self.ports[ifname] = port
        br.ports[ifname] = port
        self._apply_port(port)
        self._apply_members(br)
        if type == "vxlan":
            try:
                self._start_tunnel(port)
            except ConfigError:
                self.del_port(ifname)
                raise
        for cb in self.port_listeners:
            cb("add", port)
        return port

    def _open_io(self, port):
        """The port's nodes in every worker's graph (port.io: worker 0's, port.ios: all)."""
        port.n_workers = len(self.graphs)
        port.ios = []
        try:
            for w, g in enumerate(self.graphs):
                port.ios.append(port_types.TYPES[port.type](g, port, w))
                if w == 0:
                    port.io = port.ios[0]
        except (OSError, ValueError) as e:
            if port.ios:
                port_types.close(self.graphs, port)
            raise ConfigError(f"cannot open {port.type} port {port.name}: {e}") from None
        port.mtu = port_types.mtu_of(port)

    @staticmethod
    def _mtu_request(port, value):
        if value in (None, "", "[]"):
            return None
        try:
            mtu = int(value)
        except (TypeError, ValueError):
            mtu = 0
        if not 68 <= mtu <= 65535:
            raise ConfigError(f"mtu_request: {value!r} is not an MTU (68..65535)")
        if port.type == "vxlan":
            raise ConfigError("mtu_request: a vxlan port's MTU follows its uplink's")
        return mtu

    @under_barrier
    def set_mtu_request(self, ifname, value):
        """ovs-vsctl set interface IF mtu_request=N (or [] for the default)."""
        port = self.ports.get(ifname) or self.uplinks.get(ifname)
        if port is None:
            raise ConfigError(f"no port named {ifname}")
        mtu = self._mtu_request(port, value)
        try:
            if mtu and port.type in ("afpacket", "system"):
                port_types.device_mtu(port.name, mtu)
            elif mtu and port.type == "internal":
                port.io[2].set_mtu(mtu)
        except OSError as e:
            raise ConfigError(f"mtu_request: {port.name}: {e.strerror or e}") from None
        port.mtu_request = mtu
        self.refresh_mtus()

    def refresh_mtus(self):
        """Take up MTU changes (mtu_request, or `ip link set … mtu` on a device); a changed
        uplink re-sets the tunnels over it."""
        changed = False
        for p in (*self.ports.values(), *self.uplinks.values()):
            if p.type == "vxlan":
                continue                # follows its uplink (resolve_tunnels)
            if port_types.refresh_mtu(self.graphs, p) and p.bridge is None:
                changed = True
        if changed:
            for t in self.tunnels():
                t.encap_set = False
            self.resolve_tunnels()

    # ---- tunnels ----

    def _check_tunnel(self, port):
        import ipaddress
        o = port.options
        for key in ("remote_ip", "local_ip", "key"):
            if key not in o:
                raise ConfigError(f"vxlan port {port.name}: options:{key} is required")
        try:
            remote, local = ipaddress.IPv4Address(o["remote_ip"]), ipaddress.IPv4Address(o["local_ip"])
            vni = int(o["key"])
        except ValueError as e:
            raise ConfigError(f"vxlan port {port.name}: {e}") from None
        if not 0 <= vni < 1 << 24:
            raise ConfigError(f"vxlan port {port.name}: options:key {vni} out of range 0..16777215")
        if remote == local or remote.is_multicast or remote.is_unspecified:
            raise ConfigError(f"vxlan port {port.name}: bad remote_ip {remote}")
        for t in self.tunnels():
            if t.name == port.name:             # itself, being reconfigured
                continue
            if t.options["remote_ip"] == str(remote) and int(t.options["key"]) == vni:
                raise ConfigError(f"vxlan port {port.name}: tunnel {t.name} already uses "
                                  f"remote_ip {remote} key {vni}")
        o["remote_ip"], o["local_ip"], o["key"] = str(remote), str(local), str(vni)
        manual = [k for k in ("spi_out", "spi_in", "key_out", "key_in") if k in o]
        if manual and len(manual) != 4:
            raise ConfigError(f"vxlan port {port.name}: manual SAs need spi_out, spi_in, key_out and key_in")
        if manual and "psk" in o:
            raise ConfigError(f"vxlan port {port.name}: options:psk and manual SAs exclude each other")
        from fastpath.ike.tunnel import is_ike
        if is_ike(o) and manual:
            raise ConfigError(f"vxlan port {port.name}: options:ike and manual SAs exclude each other")
        if is_ike(o) and not str(o.get("psk", "")) and "certificate" not in o:
            raise ConfigError(f"vxlan port {port.name}: IKEv2 needs options:psk or options:certificate")
        if ("psk" in o or "certificate" in o) and str(o.get("ike", "true")).lower() == "false":
            raise ConfigError(f"vxlan port {port.name}: options:psk and options:certificate key the "
                              f"tunnel with IKEv2; options:ike=false contradicts them")
        if "esn" in o and not manual and not is_ike(o):
            raise ConfigError(f"vxlan port {port.name}: options:esn is for IPsec tunnels (manual "
                              f"SAs or options:psk)")
        from fastpath.vpn import uses_esn
        if uses_esn(o) and str(o.get("replay_window", "")) == "0":
            # the kernel refuses it too: ESN infers the high bits from the window
            raise ConfigError(f"vxlan port {port.name}: extended sequence numbers need a replay "
                              f"window (options:replay_window 1..4096)")
        if "tcp_mss_clamp" in o:
            try:
                o["tcp_mss_clamp"] = str(parse_clamp(o["tcp_mss_clamp"]))
            except ValueError as e:
                raise ConfigError(f"vxlan port {port.name}: {e}") from None
        port.ipsec = bool(manual) or is_ike(o)
        port.sa_index = 0
        port.uplink = None

    def _start_tunnel(self, port):
        self.each("vxlan-input").set_tunnel(port.sw_if_index, port.options["remote_ip"],
                                            int(port.options["key"]), port.ipsec)
        port.mss_clamp = (0, 0)
        self._apply_tunnel_mtu(port)
        if port.ipsec:
            from fastpath import vpn
            vpn.start(self, port)
        self.resolve_tunnels()

    def _stop_tunnel(self, port):
        self.each("vxlan-input").clear_tunnel(port.sw_if_index)
        self.each("vxlan-encap").clear_tunnel(port.sw_if_index)
        for name in ("tcp-mss-clamp-input", "tcp-mss-clamp-output"):
            self.each(name).set_clamp(port.sw_if_index, 0, 0)
        port.encap_set = False
        if port.ipsec:
            from fastpath import vpn
            vpn.stop(self, port)

    @under_barrier
    def set_tunnel_options(self, ifname, options):
        """ovs-vsctl set interface TUNNEL options:KEY=VALUE...: the tunnel stops (its IKE SAs
        deleted towards the peer, its ESP SAs gone) and starts again with the options
        changed, keyed afresh; the port stays in its bridge with its flows and MAC entries.
        Options the checks refuse change nothing."""
        port = self.port(ifname)
        if port.type != "vxlan":
            raise ConfigError(f"set interface {ifname}: only a tunnel (vxlan) port's options can "
                              f"change; del-port and add-port for a {port.type} port")
        new = {**port.options, **{k.replace("options:", ""): str(v) for k, v in options.items()}}
        probe = Port(port.name, port.type, port.sw_if_index, port.ofport, port.bridge)
        probe.options = new
        self._check_tunnel(probe)              # raises before anything changed
        self._stop_tunnel(port)
        port.options = probe.options
        self._check_tunnel(port)
        self._start_tunnel(port)
        self._apply_port(port)

    def _free_sw_if_index(self):
        used = {p.sw_if_index for p in (*self.ports.values(), *self.uplinks.values())}
        sw_if_index = next((i for i in range(1, MAX_PORTS) if i not in used), None)
        if sw_if_index is None:
            raise ConfigError(f"at most {MAX_PORTS - 1} ports")
        return sw_if_index

    def _set_vlan(self, port, tag, trunks, vlan_mode):
        if vlan_mode is not None and vlan_mode not in MODES:
            raise ConfigError(f"vlan_mode: {vlan_mode!r} is not one of {', '.join(MODES)}")
        port.tag = parse_vlan(tag) if tag not in (None, "", "[]") else None
        port.trunks = parse_trunks(trunks)
        port.vlan_mode = vlan_mode or None

    @under_barrier
    def set_port(self, ifname, **settings):
        """ovs-vsctl set port IF tag=N trunks=... vlan_mode=... (options:tcp_mss_clamp=... on a
        tunnel); unspecified ones are kept."""
        port = self.port(ifname)
        unknown = set(settings) - {"tag", "trunks", "vlan_mode", "options:tcp_mss_clamp"}
        if unknown:
            raise ConfigError(f"unknown port setting {sorted(unknown)[0]!r}")
        tag = settings.get("tag", port.tag)
        trunks = settings.get("trunks", port.trunks)
        mode = settings.get("vlan_mode", port.vlan_mode)
        trial = Port(port.name, port.type, port.sw_if_index, port.ofport, port.bridge)
        self._set_vlan(trial, tag, trunks, mode)
        if "options:tcp_mss_clamp" in settings:
            self._set_mss_clamp(port, settings["options:tcp_mss_clamp"])
        port.tag, port.trunks, port.vlan_mode = trial.tag, trial.trunks, trial.vlan_mode
        self._apply_port(port)

    def _apply_port(self, port):
        # tunnels form a split-horizon group: what comes from one is never flooded to another
        group = 1 if port.type == "vxlan" else int(port.options.get("split_group", 0))
        self.tables.set_port(port.sw_if_index, port.bridge.index, port.effective_mode,
                             port.tag or 0, port.trunks, group)

    def _apply_members(self, br):
        self.tables.set_members(br.index, [p.sw_if_index for p in br.ports.values()])
        # fail-open (no controller, standalone) bypasses the table: NORMAL, as OVS does
        self.tables.set_has_flows(br.index, not br.fail_open and not br.flows.is_default)

    @under_barrier
    def set_port_admin(self, ifname, up):
        """Administratively up or down (OpenFlow PORT_MOD): interface-output sends nothing
        on a port that is down (counted as interface_down)."""
        port = self.port(ifname)
        port.admin_up = bool(up)
        self.each("interface-output").set_up(port.sw_if_index, port.admin_up)

    @under_barrier
    def apply_flows(self, br_name):
        """The bridge's flow table or fail-mode state changed (the OpenFlow agent)."""
        self._apply_members(self.bridge(br_name))

    @under_barrier
    def del_port(self, ifname, br_name=None):
        port = self.port(ifname)
        br = port.bridge
        if br_name is not None and br.name != br_name:
            raise ConfigError(f"port {ifname} is not in bridge {br_name}")
        del br.ports[ifname]
        del self.ports[ifname]
        self._apply_members(br)
        self.tables.clear_port(port.sw_if_index)
        br.fdb.port_removed(port.sw_if_index)
        br.flows.port_removed(port.sw_if_index)
        self._apply_members(br)
        if port.type == "vxlan":
            self._stop_tunnel(port)
        for cb in self.port_listeners:
            cb("delete", port)
        port_types.close(self.graphs, port)

    def port(self, ifname):
        try:
            return self.ports[ifname]
        except KeyError:
            raise ConfigError(f"no port named {ifname}") from None

    # ---- L3 uplinks (the VPN underlay) ----

    @under_barrier
    def add_ip(self, ifname, cidr, type="afpacket", gw=None, mtu_request=None, **options):
        """Own interface `ifname` in L3 mode with address cidr (e.g. 192.0.2.1/24)."""
        import ipaddress
        try:
            address = ipaddress.IPv4Interface(cidr)
            gateway = ipaddress.IPv4Address(gw) if gw else None
        except ValueError as e:
            raise ConfigError(f"add-ip: {e}") from None
        if address.network.prefixlen == 32 or address.ip in (address.network.network_address,
                                                              address.network.broadcast_address):
            raise ConfigError(f"add-ip: {cidr} is not a host address on a subnet")
        if gateway is not None and gateway not in address.network:
            raise ConfigError(f"add-ip: gateway {gateway} is not on {address.network}")
        if ifname in self.ports or ifname in self.uplinks:
            raise ConfigError(f"port {ifname} already exists")
        if type not in port_types.TYPES or type == "vxlan":
            raise ConfigError(f"add-ip: an uplink cannot be of type {type!r}")
        port = Port(ifname, type, self._free_sw_if_index(), 0, None)
        port.address, port.gateway = address, gateway
        port.options = {k.replace("options:", ""): v for k, v in options.items()}
        port.mtu_request = self._mtu_request(port, mtu_request)
        self._open_io(port)
        port.mac = port_types.mac_of(port)
        self.uplinks[ifname] = port
        self.each("ip4-input").set_address(port.sw_if_index, str(address.ip))
        self.each("ethernet-input").set_port_next(port.sw_if_index, "ip4-input")
        self.arp.addresses[port.sw_if_index] = (address, port.mac)
        self.resolve_tunnels()
        return port

    @under_barrier
    def del_ip(self, ifname):
        port = self.uplinks.get(ifname)
        if port is None:
            raise ConfigError(f"no L3 uplink named {ifname}")
        for t in self.tunnels():
            if t.uplink is port:
                raise ConfigError(f"uplink {ifname} carries tunnel {t.name}: delete it first")
        del self.uplinks[ifname]
        self.each("ip4-input").set_address(port.sw_if_index, None)
        self.each("ethernet-input").set_port_next(port.sw_if_index, None)
        self.arp.addresses.pop(port.sw_if_index, None)
        self.arp.neighbours = {k: v for k, v in self.arp.neighbours.items() if k[0] != port.sw_if_index}
        port_types.close(self.graphs, port)

    def tunnels(self):
        return [p for p in self.ports.values() if p.type == "vxlan"]

    def uplink_for(self, local_ip):
        for u in self.uplinks.values():
            if str(u.address.ip) == str(local_ip):
                return u
        return None

    def next_hop(self, uplink, remote_ip):
        import ipaddress
        remote = ipaddress.IPv4Address(remote_ip)
        if remote in uplink.address.network:
            return str(remote)
        return str(uplink.gateway) if uplink.gateway else None

    def resolve_tunnels(self):
        """Give every tunnel its next hop's MAC, asking by ARP for the ones not known yet."""
        encap = self.each("vxlan-encap")
        asked = set()
        for t in self.tunnels():
            t.uplink = self.uplink_for(t.options["local_ip"])
            if t.uplink is None:
                encap.set_next_hop(t.sw_if_index, None)
                continue
            if not getattr(t, "encap_set", False) or t.encap_uplink is not t.uplink:
                encap.set_tunnel(t.sw_if_index, t.options["local_ip"], t.options["remote_ip"],
                                 int(t.options["key"]), t.uplink.sw_if_index,
                                 self._uplink_mtu(t.uplink), t.uplink.mac, t.ipsec,
                                 t.options.get("encap") == "udp")
                t.encap_set, t.encap_uplink = True, t.uplink
                self._apply_tunnel_mtu(t)
                if t.sa_index:
                    encap.set_sa(t.sw_if_index, t.sa_index)
            nh = self.next_hop(t.uplink, t.options["remote_ip"])
            entry = self.arp.neighbours.get((t.uplink.sw_if_index, nh)) if nh else None
            encap.set_next_hop(t.sw_if_index, entry[0] if entry else None)
            if nh and (entry is None or self.arp.clock() - entry[1] > 30) and (t.uplink.name, nh) not in asked:
                asked.add((t.uplink.name, nh))
                self.send_frame(t.uplink, arp_frame(1, t.uplink.mac, str(t.uplink.address.ip),
                                                    b"\0" * 6, nh))

    @staticmethod
    def _uplink_mtu(uplink):
        return uplink.mtu or 1500

    def tunnel_mtu(self, t):
        """The largest inner IP packet tunnel t carries whole over its uplink (None: no
        uplink yet): the uplink MTU less the encapsulation (ESP at its largest), the inner
        Ethernet header and one 802.1Q tag, which a tunnel keeps inside."""
        uplink = self.uplink_for(t.options["local_ip"])
        if uplink is None:
            return None
        return (self._uplink_mtu(uplink) - encap_overhead(t.ipsec, t.options.get("encap") == "udp")
                - 14 - 4)

    def _apply_tunnel_mtu(self, t):
        """The tunnel port's MTU in interface-output (so that it lowers a super-frame's
        gso_size to fit before encapsulation; larger frames still reach vxlan-encap, which
        counts them as too_big) and its MSS clamp, both from the uplink it has now."""
        mtu = t.mtu = self.tunnel_mtu(t)
        t.mss_clamp = clamp_values(t.options.get("tcp_mss_clamp"), mtu)
        on = any(t.mss_clamp)
        for name in ("tcp-mss-clamp-input", "tcp-mss-clamp-output"):
            self.each(name).set_clamp(t.sw_if_index, *t.mss_clamp)
        self.each("vxlan-input").set_mss_clamp(t.sw_if_index, on)
        self.each("interface-output").set_interface(
            t.sw_if_index, "tcp-mss-clamp-output" if on else "vxlan-encap", True,
            mtu or 65535, 0, 65535)

    def _set_mss_clamp(self, t, value):
        """set port T options:tcp_mss_clamp=auto|N|off."""
        if t.type != "vxlan":
            raise ConfigError(f"port {t.name}: options:tcp_mss_clamp is for vxlan tunnel ports")
        if str(value) in ("off", ""):
            t.options.pop("tcp_mss_clamp", None)
        else:
            try:
                t.options["tcp_mss_clamp"] = str(parse_clamp(value))
            except ValueError as e:
                raise ConfigError(f"port {t.name}: {e}") from None
        self._apply_tunnel_mtu(t)

    @under_barrier
    def _neighbour_learned(self, sw_if_index, ip, mac):
        encap = self.each("vxlan-encap")
        for t in self.tunnels():
            if t.uplink is not None and t.uplink.sw_if_index == sw_if_index \
                    and self.next_hop(t.uplink, t.options["remote_ip"]) == ip:
                encap.set_next_hop(t.sw_if_index, mac)

    def send_frame(self, port, frame):
        """Send a frame the control plane built (ARP, IKE) out of a port."""
        pool = self.graph.pool
        bufs = pool.alloc_py(1)
        if len(bufs) == 0:
            return False
        pool.set_frame(int(bufs[0]), frame)
        pool.meta("tx_if")[bufs[0]] = port.sw_if_index
        self.graph.inject("interface-output", bufs)
        return True

    def show_arp(self):
        names = {p.sw_if_index: p.name for p in self.uplinks.values()}
        return self.arp.show(names)

    # ---- flows ----

    @under_barrier
    def add_flow(self, br_name, text):
        br = self.bridge(br_name)
        try:
            br.flows.add(text)
        except ValueError as e:           # FlowSyntaxError, unknown port
            raise ConfigError(str(e)) from None
        self._apply_members(br)

    @under_barrier
    def del_flows(self, br_name, text=None):
        br = self.bridge(br_name)
        try:
            n = br.flows.delete(text)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self._apply_members(br)
        return n

    def dump_flows(self, br_name):
        return self.bridge(br_name).flows.dump()

    # ---- MAC table ----

    def fdb_show(self, br_name):
        br = self.bridge(br_name)
        names = {p.sw_if_index: str(p.ofport) for p in br.ports.values()}
        return br.fdb.format_show(self.tables.now, names)

    def fdb_rows(self, br_name):
        br = self.bridge(br_name)
        names = {p.sw_if_index: p.name for p in br.ports.values()}
        return [{"port": names.get(port, str(port)), "vlan": vlan, "mac": mac,
                 "age": "static" if static else age}
                for port, vlan, mac, age, static in br.fdb.entries(self.tables.now)]

    @under_barrier
    def fdb_flush(self, br_name):
        return self.bridge(br_name).fdb.flush()

    @under_barrier
    def fdb_add(self, br_name, port_name, vlan, mac):
        br = self.bridge(br_name)
        port = br.ports.get(port_name)
        if port is None:
            raise ConfigError(f"bridge {br_name} has no port {port_name}")
        try:
            br.fdb.add_static(mac, parse_vlan(vlan, "vlan"), port.sw_if_index)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    # ---- observability ----

    def interface_stats(self):
        rows = []
        for p in (*self.ports.values(), *self.uplinks.values()):
            s = {"name": p.name, "type": p.type, "bridge": p.bridge.name if p.bridge else "",
                 "ofport": p.ofport, "sw_if_index": p.sw_if_index, "mtu": p.mtu}
            s.update(port_types.stats(p))
            if p.type == "vxlan":
                s["mtu"] = self.tunnel_mtu(p) or 0
                s["tcp_mss_clamp"] = "{}/{}".format(*p.mss_clamp) if any(p.mss_clamp) else "off"
            rows.append(s)
        return rows

    def show(self):
        lines = []
        for br in self.bridges.values():
            lines.append(f"    Bridge {br.name}")
            status = dict(br.agent.status()) if br.agent else {}
            for target in br.controllers:
                lines.append(f'        Controller "{target}"')
                if status.get(target):
                    lines.append("            is_connected: true")
            if br.fail_mode != "standalone":
                lines.append(f"        fail_mode: {br.fail_mode}")
            for p in br.ports.values():
                lines.append(f"        Port {p.name}")
                if p.tag is not None:
                    lines.append(f"            tag: {p.tag}")
                if p.trunks:
                    lines.append(f"            trunks: [{', '.join(map(str, p.trunks))}]")
                if p.vlan_mode:
                    lines.append(f"            vlan_mode: {p.vlan_mode}")
                lines.append(f"            Interface {p.name}")
                if p.type != "system":
                    lines.append(f"                type: {p.type}")
                if p.options:
                    opts = ", ".join(f"{k}={'<hidden>' if k in SECRET_OPTIONS else v}"
                                     for k, v in sorted(p.options.items()))
                    lines.append(f"                options: {{{opts}}}")
                if p.type == "vxlan" and any(p.mss_clamp):
                    lines.append(f"                tcp_mss_clamp: ipv4 {p.mss_clamp[0]}, "
                                 f"ipv6 {p.mss_clamp[1]} (in effect)")
        return "\n".join(lines)

    def config(self):
        """The whole configuration as plain data (what `save` writes and `apply` reads)."""
        out = {"bridge": {}}
        if self.uplinks:
            out["uplink"] = {}
            for u in self.uplinks.values():
                d = {"type": u.type, "address": str(u.address)}
                if u.gateway:
                    d["gw"] = str(u.gateway)
                d.update({f"options:{k}": v for k, v in u.options.items()})
                out["uplink"][u.name] = d
        for br in self.bridges.values():
            b = {"mac_aging_time": br.fdb.aging_time, "mac_table_size": br.fdb.max_entries,
                 "port": {p.name: p.settings() for p in br.ports.values()}}
            if not br.flows.is_default:
                from fastpath import ofsyntax
                # groups and meters come only from a controller, which installs them (and
                # the flows that use them) again when it connects: such flows cannot load
                b["flows"] = [ofsyntax.format_flow(f.rule) for f in br.flows.flows
                              if f.rule.meter is None and not groups_of(f)]
            if br.controllers:
                b["controller"] = list(br.controllers)
            if br.fail_mode != "standalone":
                b["fail_mode"] = br.fail_mode
            if br.datapath_id is not None:
                b["datapath_id"] = f"{br.datapath_id:016x}"
            out["bridge"][br.name] = b
        return out

    @under_barrier
    def apply(self, config):
        """Build bridges, ports and flows from config() data; raises ConfigError."""
        if not isinstance(config, dict) or set(config) - {"bridge", "uplink"}:
            raise ConfigError("config: expected only [uplink.NAME] and [bridge.NAME] tables")
        for name, u in config.get("uplink", {}).items():
            u = dict(u)
            self.add_ip(name, u.pop("address", None), type=u.pop("type", "afpacket"), gw=u.pop("gw", None), **u)
        for br_name, b in config.get("bridge", {}).items():
            if not isinstance(b, dict):
                raise ConfigError(f"config: bridge {br_name} is not a table")
            self.add_br(br_name, **{k: v for k, v in b.items() if k in ("mac_aging_time", "mac_table_size")})
            for pname, p in b.get("port", {}).items():
                p = dict(p)
                self.add_port(br_name, pname, type=p.pop("type", "afpacket"), tag=p.pop("tag", None),
                              trunks=p.pop("trunks", None), vlan_mode=p.pop("vlan_mode", None),
                              ofport_request=p.pop("ofport", None), **p)
            flows = b.get("flows")
            if flows is not None:
                self.del_flows(br_name)
                for f in flows:
                    self.add_flow(br_name, f)

    def close(self):
        self.stop_workers()           # first: a parked worker would never see its stop flag
        with self.barrier:
            for name in list(self.bridges):
                self.del_br(name)
            for name in list(self.uplinks):
                self.del_ip(name)
            wake = getattr(self, "packet_in_wake", -1)     # (fastpath.openflow.agent's)
            if wake >= 0:
                self.graph.remove_fd(wake)
                for node in self.nodes("packet-in"):
                    node.wake_fd = -1
                os.close(wake)
                self.packet_in_wake = -1
