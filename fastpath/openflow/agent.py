"""The OpenFlow 1.3 agent of one bridge: its controller connections and what it answers.

A bridge with controllers (`fastpathctl set-controller BR TARGET...`) gets an Agent. It is
control plane only: it reads messages on the dispatch loop's fds, edits the bridge's
FlowTable (the same one `fastpathctl add-flow/dump-flows` use) and sends frames through
Switch.send_frame; frames reach it only through the packet-in node's queue, drained from a
timer. Every message it cannot honour gets the OFPT_ERROR the spec gives for it, carrying
the message's first 64 bytes; a stream that cannot be framed, or speaks another version,
is closed with a log line and counted (`closed_bad_stream`).

fail-mode (Bridge.fail_mode), as OVS: with active (tcp:) controllers configured and none
connected, a `standalone` bridge is a plain NORMAL learning switch (its flows bypassed)
and a `secure` one keeps its flows and drops the rest. Passive (ptcp:) listeners are for
management clients such as ovs-ofctl and do not count, as in OVS.
"""
import gc
import hashlib
import logging
import os
import struct
import time

from fastpath import ports as port_types
from fastpath.openflow import codec as c
from fastpath.openflow import flowmod
from fastpath.openflow import translate as tr
from fastpath.openflow.connection import ActiveTarget, Channel, PassiveTarget, parse_target

log = logging.getLogger("fastpath")
TICK = 0.02                 # the agents' timer: connects, probes, PACKET_IN draining
PROBE_INTERVAL = 5.0        # idle seconds before an ECHO_REQUEST; twice that: disconnect
EXPIRY_INTERVAL = 1.0       # flow timeouts and link state are looked at this often
F_TAGGED_IN = 4             # buffer.pxd's flag: the frame arrived tagged (for vlan-input)


# what a SLAVE connection may not send (OpenFlow 1.3 6.3.5): OFPBRC_IS_SLAVE
SLAVE_REFUSED = frozenset((c.FLOW_MOD, c.PACKET_OUT, c.GROUP_MOD, c.PORT_MOD, c.TABLE_MOD,
                           c.METER_MOD))


def default_datapath_id(bridge_name):
    """A stable 48-bit id per bridge name, as OVS derives one from the bridge's MAC."""
    return int.from_bytes(hashlib.sha256(bridge_name.encode()).digest()[:6], "big") & ~(1 << 40)


def datapath_id(bridge):
    return bridge.datapath_id if bridge.datapath_id is not None else default_datapath_id(bridge.name)


class Agent:
    def __init__(self, switch, bridge):
        self.switch = switch
        self.bridge = bridge
        self.targets = []
        self.counters = dict.fromkeys(("connections", "rx_messages", "tx_messages", "errors_sent",
                                       "closed_bad_stream", "packet_in", "packet_in_dropped",
                                       "packet_in_metered",
                                       "flow_mods"), 0)
        self.fail_open = False
        self.timed = set()          # Flows with a timeout, for expire()
        self.next_expiry = 0.0
        self.link_up = {}           # port name -> its link state as last reported
        self.generation_id = None   # ROLE_REQUEST: the last MASTER/SLAVE generation_id seen
        self.flows_changed = False  # FLOW_MODs read, Switch.apply_flows not yet called
        self.read_ports = None      # tr.Ports for the FLOW_MODs of the read under way

    # ---- targets ----

    def set_targets(self, texts):
        """Replace the controller targets (each checked first: ValueError, OSError)."""
        parsed = [parse_target(t) for t in texts]
        self.close()
        try:
            for text, (kind, ip, port) in zip(texts, parsed):
                if kind == "tcp":
                    self.targets.append(ActiveTarget(text, ip, port))
                else:
                    self.targets.append(PassiveTarget(text, ip, port, self.switch.graph,
                                                      self._channel))
        except OSError:
            self.close()                # all or nothing: no half-configured bridge
            raise
        self.tick(time.monotonic())

    def close(self):
        for t in self.targets:
            t.close()
        self.targets = []
        self._update_fail_open()

    def channels(self):
        return [ch for t in self.targets for ch in t.channels if ch.negotiated]

    def status(self):
        """[(target, connected)] for `show` and get-controller."""
        return [(t.text, any(ch.negotiated for ch in t.channels)) for t in self.targets]

    def _channel(self, sock, peer):
        ch = Channel(sock, peer, self.switch.graph, self._readable)
        self.counters["connections"] += 1
        log.info("openflow %s: connected to %s", self.bridge.name, peer)
        self._send(ch, c.hello())
        return ch

    # ---- the timer ----

    def tick(self, now):
        if now >= self.next_expiry:
            # timeouts and link state once a second: control plane, off the packet path
            self.next_expiry = now + EXPIRY_INTERVAL
            gone = flowmod.expire(self.bridge.flows, self.timed, now)
            if gone:
                self.switch.apply_flows(self.bridge.name)
                self._flows_removed(gone)
            self._poll_links()
        for t in self.targets:
            t.poll(now, self._channel)
            for ch in t.channels:
                ch.flush()
                idle = now - ch.last_rx
                if idle > 2 * PROBE_INTERVAL:
                    log.info("openflow %s: %s: inactivity probe timed out", self.bridge.name, ch.peer)
                    ch.close()
                elif idle > PROBE_INTERVAL and not ch.probe_sent and ch.negotiated:
                    ch.probe_sent = True
                    self._send(ch, c.message(c.ECHO_REQUEST, 0))
        self._update_fail_open()

    def tick_fail_mode(self):
        """The bridge's fail-mode changed: take it up now."""
        self._update_fail_open()

    def _update_fail_open(self):
        active = [t for t in self.targets if isinstance(t, ActiveTarget)]
        fail_open = (self.bridge.fail_mode == "standalone" and bool(active)
                     and not any(ch.negotiated for t in active for ch in t.channels))
        if fail_open != self.bridge.fail_open:
            log.info("openflow %s: %s", self.bridge.name,
                     "no controller: NORMAL switching (fail-mode standalone)" if fail_open
                     else "flow table in effect")
            self.bridge.fail_open = fail_open
            self.switch.apply_flows(self.bridge.name)

    # ---- reading ----

    def _send(self, ch, data):
        ch.send(data)
        self.counters["tx_messages"] += 1

    def _error(self, ch, xid, e, msg):
        log.debug("openflow %s: %s: refusing message: %s", self.bridge.name, ch.peer, e)
        self._send(ch, c.error(xid, e.type, e.code, msg[:c.ERROR_DATA_LEN]))
        ch.errors_sent += 1
        self.counters["errors_sent"] += 1

    def _drop(self, ch, why):
        log.warning("openflow %s: %s: %s; closing the connection", self.bridge.name, ch.peer, why)
        self.counters["closed_bad_stream"] += 1
        ch.flush()
        ch.close()
        self._update_fail_open()

    def _readable(self, ch):
        garbage = None
        try:
            msgs, eof = ch.receive()
        except c.FramingError as e:
            # what came whole before the bad header is answered first (a BARRIER among it
            # gets its reply), then the connection goes
            msgs, eof, garbage = e.messages, False, e
        # a read carries up to a few hundred FLOW_MODs, each leaving a Flow, its rule and
        # match behind: with the collector on, every few hundred of those objects it
        # walks the young ones again and, now and then, the whole heap of installed flows
        # (about 40% of a FLOW_MOD's time). Paused for the read, it runs once after it.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            for version, type, xid, msg in msgs:
                if not ch.open:
                    return
                self.counters["rx_messages"] += 1
                self.handle(ch, version, type, xid, msg)
        finally:
            # one apply for a whole read of FLOW_MODs, before the dispatch loop runs a frame
            self.read_ports = None
            try:
                self._apply_flows()
            finally:
                if collecting:
                    gc.enable()
        if garbage is not None and ch.open:
            self._drop(ch, f"garbage stream ({garbage})")
            return
        if eof and ch.open:
            log.info("openflow %s: %s closed the connection", self.bridge.name, ch.peer)
            ch.close()
            self._update_fail_open()

    def _apply_flows(self):
        """Switch.apply_flows for the FLOW_MODs carried out since the last one."""
        if self.flows_changed:
            self.flows_changed = False
            self.switch.apply_flows(self.bridge.name)

    def handle(self, ch, version, type, xid, msg):
        body = msg[c.HEADER.size:]
        if not ch.negotiated:
            if type != c.HELLO or c.VERSION not in c.hello_versions(version, body):
                self._send(ch, c.error(xid, c.ET_HELLO_FAILED, c.HFC_INCOMPATIBLE,
                                       b"fastpath speaks OpenFlow 1.3 (0x04) only"))
                self._drop(ch, f"no OpenFlow 1.3 in its HELLO (type {type}, version {version})")
                return
            ch.negotiated = True
            self._update_fail_open()
            return
        if version != c.VERSION:
            self._error(ch, xid, c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_VERSION), msg)
            self._drop(ch, f"version {version} after negotiating 1.3")
            return
        handler = self.HANDLERS.get(type)
        try:
            if ch.role == c.ROLE_SLAVE and type in SLAVE_REFUSED:
                raise c.OFError(c.ET_BAD_REQUEST, c.BRC_IS_SLAVE, "this connection is a slave")
            if type == c.EXPERIMENTER:          # TS-006 7.5.4: no experimenter is understood here
                raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_EXPERIMENTER, "experimenter message")
            if handler is None:
                raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_TYPE, f"message type {type}")
            handler(self, ch, xid, body)
        except c.OFError as e:
            self._error(ch, xid, e, msg)
        except (struct.error, IndexError) as e:      # a length the parsers missed: still an error
            self._error(ch, xid, c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_LEN, str(e)), msg)

    # ---- messages ----

    @staticmethod
    def _empty(body):
        if body:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_LEN, "unexpected body")

    def on_hello(self, ch, xid, body):
        pass                                 # a second HELLO changes nothing

    def on_error(self, ch, xid, body):
        type, code, data = c.parse_error(body)
        log.info("openflow %s: %s reports error type %d code %d", self.bridge.name, ch.peer, type, code)

    def on_echo_request(self, ch, xid, body):
        self._send(ch, c.message(c.ECHO_REPLY, xid, body))

    def on_echo_reply(self, ch, xid, body):
        pass                                 # last_rx already moved: the probe is answered

    def on_features_request(self, ch, xid, body):
        self._empty(body)
        self._send(ch, c.features_reply(xid, datapath_id(self.bridge),
                                        n_tables=self.bridge.flows.n_tables))

    def on_get_config_request(self, ch, xid, body):
        self._empty(body)
        self._send(ch, c.switch_config(c.GET_CONFIG_REPLY, xid, ch.config_flags, ch.miss_send_len))

    def on_set_config(self, ch, xid, body):
        ch.config_flags, ch.miss_send_len = c.parse_switch_config(body)

    def on_get_async_request(self, ch, xid, body):
        self._empty(body)
        self._send(ch, c.async_config(c.GET_ASYNC_REPLY, xid, ch.async_masks))

    def on_set_async(self, ch, xid, body):
        ch.async_masks = c.parse_async_config(body)

    def on_barrier_request(self, ch, xid, body):
        self._empty(body)
        # every earlier message was carried out before this one was read; the frames of
        # earlier PACKET_OUTs are queued into the graph: they leave before the reply
        self._apply_flows()
        self.switch.graph.drain_queued()
        self._send(ch, c.message(c.BARRIER_REPLY, xid))

    def on_role_request(self, ch, xid, body):
        """OpenFlow 1.3 6.3.5: EQUAL, MASTER (the other masters become slaves) or SLAVE;
        MASTER and SLAVE carry a generation_id, refused as stale when it is older (by
        signed 64-bit distance) than the last one seen."""
        role, generation_id = c.parse_role(body)
        if role not in (c.ROLE_NOCHANGE, c.ROLE_EQUAL, c.ROLE_MASTER, c.ROLE_SLAVE):
            raise c.OFError(c.ET_ROLE_REQUEST_FAILED, c.RRFC_BAD_ROLE, f"role {role}")
        if role in (c.ROLE_MASTER, c.ROLE_SLAVE):
            if self.generation_id is not None:
                distance = (generation_id - self.generation_id) & 0xFFFFFFFFFFFFFFFF
                if distance >= 1 << 63:
                    raise c.OFError(c.ET_ROLE_REQUEST_FAILED, c.RRFC_STALE,
                                    f"generation_id {generation_id} is older than "
                                    f"{self.generation_id}")
            self.generation_id = generation_id
        if role == c.ROLE_MASTER:
            for other in self.channels():
                if other is not ch and other.role == c.ROLE_MASTER:
                    other.role = c.ROLE_SLAVE
                    log.info("openflow %s: %s: now a slave (a new master)", self.bridge.name,
                             other.peer)
        if role != c.ROLE_NOCHANGE:
            ch.role = role
        self._send(ch, c.role(c.ROLE_REPLY, xid, ch.role,
                              self.generation_id if self.generation_id is not None else 0))

    def _wants(self, ch, kind, reason):
        """Whether ch's SET_ASYNC masks (kind 0: packet-in, 1: port-status, 2:
        flow-removed) ask for this reason, as its role reads them."""
        return ch.async_masks[2 * kind + (ch.role == c.ROLE_SLAVE)] >> reason & 1

    def on_port_mod(self, ch, xid, body):
        """PORT_MOD: OFPPC_PORT_DOWN (the port's admin state) and OFPPC_NO_PACKET_IN; the
        hw_addr must be the port's. PORT_STATUS MODIFY to every controller on a change."""
        port_no, hw_addr, config, mask, advertise = c.parse_port_mod(body)
        port = tr.Ports(self.bridge).by_ofport.get(port_no)
        if port is None:
            raise c.OFError(c.ET_PORT_MOD_FAILED, c.PMFC_BAD_PORT, f"port {port_no:#x}")
        if hw_addr != self._mac(port):
            raise c.OFError(c.ET_PORT_MOD_FAILED, c.PMFC_BAD_HW_ADDR,
                            f"hw_addr {hw_addr.hex()} is not port {port_no}'s")
        if mask & ~(c.PC_PORT_DOWN | c.PC_NO_PACKET_IN):
            raise c.OFError(c.ET_PORT_MOD_FAILED, c.PMFC_BAD_CONFIG,
                            f"config bits {mask:#x}: only PORT_DOWN and NO_PACKET_IN")
        if advertise:
            raise c.OFError(c.ET_PORT_MOD_FAILED, c.PMFC_BAD_ADVERTISE,
                            "advertised features cannot be changed")
        before = self._port(port)
        if mask & c.PC_PORT_DOWN:
            up = not config & c.PC_PORT_DOWN
            if up != port.admin_up:
                self.switch.set_port_admin(port.name, up)
        if mask & c.PC_NO_PACKET_IN:
            port.no_packet_in = bool(config & c.PC_NO_PACKET_IN)
        self._update_live(port)
        if self._port(port) != before:
            self.port_changed(c.PR_MODIFY, port)

    GROUP_TYPES = {c.GT_ALL: "all", c.GT_SELECT: "select", c.GT_INDIRECT: "indirect",
                   c.GT_FF: "ff"}
    GROUP_NUMBERS = {v: k for k, v in GROUP_TYPES.items()}

    def on_group_mod(self, ch, xid, body):
        """GROUP_MOD ADD/MODIFY/DELETE of ALL, SELECT (a bucket per flow, by a hash of its
        key, by weight) and INDIRECT groups (OpenFlow 1.3 6.5). A
        deleted group takes the flows that use it along (FLOW_REMOVED GROUP_DELETE)."""
        self.read_ports = None              # the groups it holds change
        command, gtype, group_id, buckets = c.parse_group_mod(body)
        br, flows = self.bridge, self.bridge.flows
        if command not in (c.GC_ADD, c.GC_MODIFY, c.GC_DELETE):
            raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_COMMAND, f"command {command}")
        if command == c.GC_DELETE:
            if group_id == c.OFPG_ALL:
                ids = [g.group_id for g in flows.groups]
            elif group_id > c.OFPG_MAX:
                raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_INVALID_GROUP, f"group {group_id:#x}")
            else:
                ids = [group_id]            # deleting a group that is not there is no error
            self._delete_with_flows(ids, flows.delete_group, c.RR_GROUP_DELETE)
            return
        if group_id > c.OFPG_MAX:
            raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_INVALID_GROUP, f"group {group_id:#x}")
        if gtype not in self.GROUP_TYPES:
            raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_TYPE,
                            f"group type {gtype}")
        exists = flows.group(group_id) is not None
        if command == c.GC_ADD and exists:
            raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_GROUP_EXISTS, f"group {group_id}")
        if command == c.GC_MODIFY and not exists:
            raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_UNKNOWN_GROUP, f"group {group_id}")
        if gtype == c.GT_INDIRECT and len(buckets) != 1:
            raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_INVALID_GROUP,
                            f"an INDIRECT group has one bucket, not {len(buckets)}")
        ports = tr.Ports(br)
        compiled, weights, watches = [], [], []
        for weight, watch_port, watch_group, acts in buckets:
            weights.append(weight)
            if gtype == c.GT_FF:
                # FAST_FAILOVER: the first bucket whose watched port is live (admin up, link up)
                if watch_group != c.OFPG_ANY:
                    raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_WATCH_UNSUPPORTED,
                                    "watch_group: only ports are watched")
                if watch_port not in ports.by_ofport:
                    raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_WATCH,
                                    f"watch_port {watch_port:#x}")
                watches.append(watch_port)
            else:
                watches.append(None)
            if weight and gtype != c.GT_SELECT:     # watches only matter to FAST_FAILOVER
                raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_WEIGHT_UNSUPPORTED,
                                f"bucket weight {weight} in a {self.GROUP_TYPES[gtype]} group")
            compiled.append(tr.to_actions(acts, ports, in_bucket=True))
        try:
            flows.set_group(group_id, self.GROUP_TYPES[gtype], compiled, weights, watches)
        except ValueError as e:
            raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_OUT_OF_GROUPS, str(e)) from None
        self.switch.apply_flows(br.name)

    def _delete_with_flows(self, ids, delete, reason):
        """GROUP_MOD or METER_MOD DELETE: delete(id) takes each out with the flows that use
        it, which go with FLOW_REMOVED(reason) where asked."""
        gone = [f for i in ids for f in delete(i)]
        self._flows_removed([(f, reason) for f in gone])
        self.switch.apply_flows(self.bridge.name)

    METER_BANDS = {c.MBT_DROP: "drop", c.MBT_DSCP_REMARK: "dscp_remark"}
    METER_BAND_NUMBERS = {v: k for k, v in METER_BANDS.items()}

    def on_meter_mod(self, ch, xid, body):
        """METER_MOD ADD/MODIFY/DELETE (OpenFlow 1.3 7.3.4.5): DROP and DSCP_REMARK bands,
        KBPS or PKTPS, with or without BURST. Meters 1..OFPM_MAX serve flows (meter:N);
        OFPM_CONTROLLER meters the PACKET_INs. A deleted meter takes the flows that use
        it along (FLOW_REMOVED DELETE: 1.3 has no METER_DELETE reason)."""
        command, flags, meter_id, bands = c.parse_meter_mod(body)
        br, flows = self.bridge, self.bridge.flows
        meters = flows.meter_table
        if command not in (c.MC_ADD, c.MC_MODIFY, c.MC_DELETE):
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_BAD_COMMAND, f"command {command}")
        if command == c.MC_DELETE and meter_id == c.OFPM_ALL:
            self._delete_with_flows([m.meter_id for m in meters.all], flows.delete_meter, c.RR_DELETE)
            return
        if meter_id == 0 or (meter_id > c.OFPM_MAX and meter_id != c.OFPM_CONTROLLER):
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_INVALID_METER, f"meter {meter_id:#x}")
        if command == c.MC_DELETE:          # deleting a meter that is not there is no error
            self._delete_with_flows([meter_id], flows.delete_meter, c.RR_DELETE)
            return
        rate_flags = flags & (c.MF_KBPS | c.MF_PKTPS)
        if flags & ~(c.MF_KBPS | c.MF_PKTPS | c.MF_BURST | c.MF_STATS) or \
                rate_flags not in (c.MF_KBPS, c.MF_PKTPS):
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_BAD_FLAGS, f"flags {flags:#x}")
        exists = meters.get(meter_id) is not None
        if command == c.MC_ADD and exists:
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_METER_EXISTS, f"meter {meter_id}")
        if command == c.MC_MODIFY and not exists:
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_UNKNOWN_METER, f"meter {meter_id}")
        if not bands:
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_BAD_BAND, "a meter needs a band")
        if len(bands) > meters.max_bands:
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_OUT_OF_BANDS, f"{len(bands)} bands")
        if any(rate == 0 for _, rate, _, _ in bands):
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_BAD_RATE, "band rate 0")
        try:
            flows.set_meter(meter_id, flags, [(self.METER_BANDS[t], rate, burst, prec)
                                              for t, rate, burst, prec in bands])
        except OverflowError as e:
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_OUT_OF_METERS, str(e)) from None
        except ValueError as e:
            raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_BAD_BAND_VALUE, str(e)) from None
        self.switch.apply_flows(br.name)

    def on_flow_mod(self, ch, xid, body):
        fm = c.parse_flow_mod(body)
        self.counters["flow_mods"] += 1
        # one port map for a read's FLOW_MODs (ports do not come and go within it; a
        # GROUP_MOD among them starts a new one)
        ports = self.read_ports
        if ports is None:
            ports = self.read_ports = tr.Ports(self.bridge)
        added, removed = flowmod.flow_mod(self.bridge.flows, ports, fm)
        if added is not None and (added.idle_timeout or added.hard_timeout):
            self.timed.add(added)
        self._flows_removed([(f, c.RR_DELETE) for f in removed])
        self.flows_changed = True           # applied once the messages read are done with

    def _flows_removed(self, gone):
        """FLOW_REMOVED for each (Flow, reason) whose rule asked for it."""
        now = time.monotonic()
        ports = None
        for f, reason in gone:
            self.timed.discard(f)
            if not f.flags & c.FF_SEND_FLOW_REM:
                continue
            ports = ports or tr.Ports(self.bridge)
            msg = c.flow_removed(0, f.rule.cookie, f.rule.priority, reason, f.rule.table,
                                 now - f.created, f.idle_timeout, f.hard_timeout, f.n_packets,
                                 f.n_bytes, flowmod.match_of(f, ports))
            for ch in self.channels():
                if self._wants(ch, 2, reason):
                    self._send(ch, msg)

    def on_packet_out(self, ch, xid, body):
        self._apply_flows()                  # OFPP_TABLE sees the FLOW_MODs before it
        buffer_id, in_port, items, frame = c.parse_packet_out(body)
        ports = tr.Ports(self.bridge)
        if buffer_id != c.NO_BUFFER:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BUFFER_UNKNOWN, "no buffers here")
        src = ports.by_ofport.get(in_port)
        if src is None and in_port not in (c.OFPP_CONTROLLER, c.OFPP_ANY):
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_PORT, f"in_port {in_port:#x}")
        if len(frame) < 14:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_PACKET, "no Ethernet frame")
        actions = tr.to_actions(items, ports, packet_out=True)
        for a in actions:
            if a.kind in ("in_port", "normal", "table") and src is None:
                raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_OUT_PORT,
                                f"{a.kind} needs a real in_port")
        self._execute(actions, bytearray(frame), src)

    def _execute(self, actions, frame, src):
        """PACKET_OUT's actions on one frame: control plane, so plain Python."""
        sw, br = self.switch, self.bridge
        for a in actions:
            if a.kind == "strip_vlan":
                if frame[12:14] in (b"\x81\x00", b"\x88\xa8") and len(frame) >= 18:
                    del frame[12:16]
            elif a.kind in ("push_vlan", "mod_vlan_vid", "mod_vlan_pcp"):
                tagged = frame[12:14] in (b"\x81\x00", b"\x88\xa8") and len(frame) >= 18
                if a.kind == "push_vlan" or not tagged:
                    tci = frame[14:16] if tagged else b"\0\0"
                    tpid = a.arg if a.kind == "push_vlan" else 0x8100
                    frame[12:12] = tpid.to_bytes(2, "big") + tci
                tci = int.from_bytes(frame[14:16], "big")
                if a.kind == "mod_vlan_vid":
                    tci = (tci & 0xF000) | a.arg
                elif a.kind == "mod_vlan_pcp":
                    tci = (tci & 0x1FFF) | a.arg << 13
                frame[14:16] = tci.to_bytes(2, "big")
            elif a.kind == "output":
                sw.send_frame(tr.Ports(br).by_ofport[a.arg], bytes(frame))
            elif a.kind == "in_port":
                sw.send_frame(src, bytes(frame))
            elif a.kind in ("flood", "all"):
                for p in br.ports.values():
                    if p is not src:
                        sw.send_frame(p, bytes(frame))
            elif a.kind in ("normal", "table"):
                self._inject(bytes(frame), src, "vlan-input" if a.kind == "normal" else "ethernet-input")
            elif a.kind == "controller":
                pass                         # back to where it came from: nothing to do

    def _inject(self, frame, src, node):
        """Into the graph as if src had received it: ethernet-input runs the bridge's flow
        table (TABLE), vlan-input the learning switch (NORMAL)."""
        pool = self.switch.graph.pool
        bufs = pool.alloc_py(1)
        if len(bufs) == 0:
            return
        b = bufs[0]
        pool.set_frame(int(b), frame)
        pool.meta("rx_if")[b] = src.sw_if_index
        pool.meta("bd")[b] = self.bridge.index
        pool.meta("flags")[b] = F_TAGGED_IN if frame[12:14] in (b"\x81\x00", b"\x88\xa8") else 0
        self.switch.graph.inject(node, bufs)

    def on_multipart_request(self, ch, xid, body):
        mtype, flags, req = c.parse_multipart_request(body)
        if flags & c.MPF_MORE:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_MULTIPART, "multipart requests in parts")
        items = self.MULTIPART.get(mtype)
        if items is None:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_MULTIPART, f"multipart type {mtype}")
        for m in c.multipart_replies(xid, mtype, items(self, req)):
            self._send(ch, m)

    def mp_desc(self, req):
        self._empty(req)
        from fastpath.control import version
        return [c.desc("fastpath", "fastpath userspace dataplane", f"fastpath {version()}",
                       "None", self.bridge.name)]

    def mp_port_desc(self, req):
        self._empty(req)
        return [self._port(p) for p in sorted(self.bridge.ports.values(), key=lambda p: p.ofport)]

    @staticmethod
    def _mac(p):
        try:
            return port_types.mac_of(p)
        except OSError:
            return bytes(6)

    def _port(self, p):
        up, admin_up = link_state(p)
        admin_up = admin_up and p.admin_up           # the device's and PORT_MOD's
        config = (0 if admin_up else c.PC_PORT_DOWN) | (c.PC_NO_PACKET_IN if p.no_packet_in else 0)
        return c.port(p.ofport, self._mac(p), p.name, config=config,
                      state=c.PS_LIVE if up and admin_up else c.PS_LINK_DOWN)

    def _poll_links(self):
        """PORT_STATUS MODIFY for each port whose link went down or came back."""
        for p in list(self.bridge.ports.values()):
            up = link_state(p)
            before = self.link_up.get(p.name)
            self.link_up[p.name] = up
            self._update_live(p)
            if before is not None and before != up:
                log.info("openflow %s: %s: link %s", self.bridge.name, p.name,
                         "up" if up[0] else "down")
                self.port_changed(c.PR_MODIFY, p)
        for name in set(self.link_up) - set(self.bridge.ports):
            del self.link_up[name]

    def _update_live(self, p):
        """FAST_FAILOVER liveness: administratively up and link up."""
        up, admin_up = link_state(p)
        self.bridge.flows.set_live(p.sw_if_index, up and admin_up and p.admin_up)

    def _select_stats(self, req):
        table_id, out_port, _group, cookie, cookie_mask, fields = c.parse_flow_stats_request(req)
        flows = self.bridge.flows
        if table_id >= flows.n_tables and table_id != c.OFPTT_ALL:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_TABLE_ID, f"table {table_id}")
        ports = tr.Ports(self.bridge)
        match = tr.to_match(fields, ports)
        chosen = flowmod.select(flows, ports, table_id, match, cookie=cookie,
                                cookie_mask=cookie_mask, out_port=out_port)
        for f in chosen:
            flows.counters(f)
        return ports, chosen

    def mp_flow(self, req):
        ports, flows = self._select_stats(req)
        now = time.monotonic()
        return [c.flow_stats(f.rule.table, now - f.created, f.rule.priority, f.idle_timeout,
                             f.hard_timeout, f.flags, f.rule.cookie, f.n_packets, f.n_bytes,
                             flowmod.match_of(f, ports), flowmod.instructions_of(f, ports))
                for f in flows]

    def mp_aggregate(self, req):
        _, flows = self._select_stats(req)
        return [c.aggregate_stats(sum(f.n_packets for f in flows), sum(f.n_bytes for f in flows),
                                  len(flows))]

    def mp_group(self, req):
        if len(req) != 8:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_LEN, "group stats request is 8 bytes")
        group_id = struct.unpack_from("!I", req)[0]
        flows, now = self.bridge.flows, time.monotonic()
        out = []
        for g in flows.groups:
            if group_id not in (c.OFPG_ALL, g.group_id):
                continue
            n_packets, n_bytes = flows.group_counters(g)
            out.append(c.group_stats(g.group_id, flows.group_ref_count(g.group_id), n_packets,
                                     n_bytes, now - g.created, flows.bucket_counters(g)))
        return out

    def mp_group_desc(self, req):
        self._empty(req)
        ports = tr.Ports(self.bridge)
        return [c.group_desc(self.GROUP_NUMBERS[g.type], g.group_id,
                             [c.bucket(tr.from_actions(b, ports), weight=w,
                                       watch_port=c.OFPP_ANY if wp is None else ports.ofport(wp) or c.OFPP_ANY)
                              for b, w, wp in zip(g.buckets, g.weights, g.watches)])
                for g in self.bridge.flows.groups]

    def mp_group_features(self, req):
        self._empty(req)
        acts = sum(1 << a for a in (c.AT_OUTPUT, c.AT_PUSH_VLAN, c.AT_POP_VLAN, tr.AT_DEC_NW_TTL,
                                    c.AT_SET_FIELD))
        # capabilities: OFPGFC_SELECT_WEIGHT
        return [c.group_features(1 << c.GT_ALL | 1 << c.GT_SELECT | 1 << c.GT_INDIRECT | 1 << c.GT_FF,
                                 1, (4096, 4096, 4096, 4096), (acts, acts, acts, acts))]

    def _meters(self, req):
        meter_id = c.parse_meter_request(req)
        return [m for m in self.bridge.flows.meter_table.all if meter_id in (c.OFPM_ALL, m.meter_id)]

    def mp_meter(self, req):
        flows, now = self.bridge.flows, time.monotonic()
        out = []
        for m in self._meters(req):
            packets, octets, bands = flows.meter_table.counters(m)
            out.append(c.meter_stats(m.meter_id, flows.meter_flow_count(m.meter_id), packets, octets,
                                     now - m.created, bands))
        return out

    def mp_meter_config(self, req):
        return [c.meter_config(m.flags, m.meter_id,
                               [c.meter_band(self.METER_BAND_NUMBERS[kind], rate, burst, prec)
                                for kind, rate, burst, prec in m.bands])
                for m in self._meters(req)]

    def mp_meter_features(self, req):
        self._empty(req)
        meters = self.bridge.flows.meter_table
        return [c.meter_features(meters.max_meters, 1 << c.MBT_DROP | 1 << c.MBT_DSCP_REMARK,
                                 c.MF_KBPS | c.MF_PKTPS | c.MF_BURST | c.MF_STATS, meters.max_bands)]

    def mp_table(self, req):
        self._empty(req)
        return [c.table_stats(*row) for row in self.bridge.flows.table_stats()]

    def mp_port_stats(self, req):
        if len(req) != 8:
            raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_LEN, "port stats request is 8 bytes")
        port_no = struct.unpack_from("!I", req)[0]
        ports = sorted(self.bridge.ports.values(), key=lambda p: p.ofport)
        if port_no != c.OFPP_ANY:
            ports = [p for p in ports if p.ofport == port_no]
            if not ports:
                raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BAD_PORT, f"port {port_no}")
        out = []
        for p in ports:
            s = port_types.stats(p)
            out.append(c.port_stats(p.ofport, s.get("rx_packets", 0), s.get("tx_packets", 0),
                                    s.get("rx_bytes", 0), s.get("tx_bytes", 0),
                                    s.get("rx_drops", s.get("rx_dropped", 0)),
                                    s.get("tx_drops", s.get("tx_dropped", 0)), 0.0))
        return out

    def mp_table_features(self, req):
        if req:
            raise c.OFError(c.ET_TABLE_FEATURES_FAILED, c.TFFC_EPERM, "tables cannot be changed")
        fields = (c.OXM_IN_PORT, tr.OXM_METADATA, c.OXM_ETH_DST, c.OXM_ETH_SRC, c.OXM_ETH_TYPE,
                  c.OXM_VLAN_VID, c.OXM_VLAN_PCP, tr.OXM_IP_PROTO, tr.OXM_IPV4_SRC,
                  tr.OXM_IPV4_DST, tr.OXM_TCP_SRC, tr.OXM_TCP_DST, tr.OXM_UDP_SRC,
                  tr.OXM_UDP_DST, tr.OXM_ICMPV4_TYPE, tr.OXM_ICMPV4_CODE, tr.OXM_ARP_OP,
                  tr.OXM_ARP_SPA, tr.OXM_ARP_TPA, tr.OXM_IPV6_SRC, tr.OXM_IPV6_DST)
        setters = (c.OXM_ETH_DST, c.OXM_ETH_SRC, c.OXM_VLAN_VID, c.OXM_VLAN_PCP, tr.OXM_IPV4_SRC,
                   tr.OXM_IPV4_DST, tr.OXM_TCP_SRC, tr.OXM_TCP_DST, tr.OXM_UDP_SRC, tr.OXM_UDP_DST)
        instructions = [c.IT_GOTO_TABLE, c.IT_WRITE_METADATA, c.IT_WRITE_ACTIONS,
                        c.IT_APPLY_ACTIONS, c.IT_CLEAR_ACTIONS, c.IT_METER]
        return [c.table_features(t, f"table{t}", 1 << 20, instructions,
                                 [c.AT_OUTPUT, c.AT_PUSH_VLAN, c.AT_POP_VLAN, tr.AT_DEC_NW_TTL,
                                  c.AT_SET_FIELD, c.AT_GROUP], fields, setters)
                for t in range(self.bridge.flows.n_tables)]

    # ---- asynchronous messages ----

    def port_changed(self, reason, port):
        """PORT_STATUS ADD/DELETE to every controller whose async mask asks for it."""
        msg = c.port_status(0, reason, self._port(port))
        for ch in self.channels():
            if self._wants(ch, 1, reason):
                self._send(ch, msg)

    def packet_in(self, in_sw_if_index, frame, cookie, table_miss, max_len, table_id=0):
        reason = c.R_NO_MATCH if table_miss else c.R_ACTION
        if self.bridge.flows.meter_table.meter_frame(c.OFPM_CONTROLLER, len(frame)) == "drop":
            self.counters["packet_in_metered"] += 1
            return
        src = self.bridge.port_by_index(in_sw_if_index)
        sent = False
        for ch in self.channels() if src is None or not src.no_packet_in else ():
            if not self._wants(ch, 0, reason):
                continue
            data = frame if max_len == c.OFPCML_NO_BUFFER else frame[:max_len]
            self._send(ch, c.packet_in(0, reason, table_id, cookie,
                                       src.ofport if src else c.OFPP_CONTROLLER,
                                       data, len(frame)))
            sent = True
        self.counters["packet_in" if sent else "packet_in_dropped"] += 1

    HANDLERS = {c.HELLO: on_hello, c.ERROR: on_error, c.ECHO_REQUEST: on_echo_request,
                c.ECHO_REPLY: on_echo_reply, c.FEATURES_REQUEST: on_features_request,
                c.GET_CONFIG_REQUEST: on_get_config_request, c.SET_CONFIG: on_set_config,
                c.GET_ASYNC_REQUEST: on_get_async_request, c.SET_ASYNC: on_set_async,
                c.BARRIER_REQUEST: on_barrier_request, c.FLOW_MOD: on_flow_mod,
                c.PACKET_OUT: on_packet_out, c.MULTIPART_REQUEST: on_multipart_request,
                c.ROLE_REQUEST: on_role_request, c.PORT_MOD: on_port_mod,
                c.GROUP_MOD: on_group_mod, c.METER_MOD: on_meter_mod}
    MULTIPART = {c.MP_DESC: mp_desc, c.MP_PORT_DESC: mp_port_desc, c.MP_FLOW: mp_flow,
                 c.MP_AGGREGATE: mp_aggregate, c.MP_TABLE: mp_table,
                 c.MP_PORT_STATS: mp_port_stats, c.MP_TABLE_FEATURES: mp_table_features,
                 c.MP_GROUP: mp_group, c.MP_GROUP_DESC: mp_group_desc,
                 c.MP_GROUP_FEATURES: mp_group_features, c.MP_METER: mp_meter,
                 c.MP_METER_CONFIG: mp_meter_config, c.MP_METER_FEATURES: mp_meter_features}


# ---------------------------------------------------------------- the switch's side

def link_state(port):
    """(link up, administratively up) of a port's Linux device; ports without one are up."""
    if port.type not in ("afpacket", "system", "internal"):
        return True, True
    try:
        with open(f"/sys/class/net/{port.name}/operstate") as f:
            oper = f.read().strip()
        with open(f"/sys/class/net/{port.name}/flags") as f:
            admin = int(f.read(), 16) & 1
    except (OSError, ValueError):
        return False, False
    # a veth whose peer is down is "lowerlayerdown"; "unknown" (TAP, some drivers) counts as up
    return oper in ("up", "unknown") and bool(admin), bool(admin)


def agents(switch):
    return [br.agent for br in switch.bridges.values() if br.agent is not None]


def _send_packet_ins(switch):
    """PACKET_IN: every worker's packet-in queue, each frame to its bridge's agent (or
    dropped)."""
    by_index = {br.index: br for br in switch.bridges.values()}
    for node in switch.nodes("packet-in"):
        while node.queue:
            bd, rx, frame, cookie, table_miss, max_len, table_id = node.queue.popleft()
            br = by_index.get(bd)
            if br is not None and br.agent is not None:
                br.agent.packet_in(rx, frame, cookie, table_miss, max_len, table_id)


def _packet_ins_woken(switch, fd):
    try:
        os.eventfd_read(fd)
    except BlockingIOError:          # another wake-up already took the count
        pass
    _send_packet_ins(switch)


def _tick_all(switch, now):
    _send_packet_ins(switch)         # (what a wake-up has not taken yet)
    for agent in agents(switch):
        agent.tick(now)


def _port_changed(switch, what, port):
    br = port.bridge
    if br is not None and br.agent is not None:
        br.agent.port_changed(c.PR_ADD if what == "add" else c.PR_DELETE, port)
        if what == "add":
            br.agent.link_up[port.name] = link_state(port)
            br.agent._update_live(port)


def set_controller(switch, br, targets):
    """Give the bridge these controller targets ([] removes its agent)."""
    if not getattr(switch, "openflow_timer", False):
        switch.openflow_timer = True
        switch.graph.add_timer(TICK, lambda now: _tick_all(switch, time.monotonic()))
        # punted frames wake the dispatch loop (packet_in.py) instead of waiting for TICK
        switch.packet_in_wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        for node in switch.nodes("packet-in"):
            node.wake_fd = switch.packet_in_wake
        switch.graph.add_fd(switch.packet_in_wake, lambda fd: _packet_ins_woken(switch, fd))
        switch.port_listeners.append(lambda what, port: _port_changed(switch, what, port))
    if not targets:
        if br.agent is not None:
            br.agent.close()
            br.agent = None
        br.controllers = []
        return
    agent = br.agent or Agent(switch, br)
    agent.set_targets(targets)
    br.agent = agent
    br.controllers = list(targets)
