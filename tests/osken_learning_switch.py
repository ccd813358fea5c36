"""A learning switch as an os-ken application, after the idea of os-ken's classic
simple_switch_13 (written here from that idea, for tests/test_osken_learning_switch.py):

- when a switch connects, one table-miss flow (priority 0, empty match) sends every frame
  that no other flow takes to the controller, whole (max_len NO_BUFFER);
- each PACKET_IN teaches it where the frame's source lives (per datapath: MAC -> port);
- a frame for a known destination gets a flow (in_port, eth_src, eth_dst -> that port),
  so the next ones cross the switch without the controller; an unknown one is flooded;
- either way the frame itself goes back out with a PACKET_OUT.

Run with: osken-manager tests/osken_learning_switch.py. Every PACKET_IN is also appended
to $LEARNING_SWITCH_LOG (if set), one line each, so a test can count them.
"""
import os

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ethernet, ether_types, packet
from os_ken.ofproto import ofproto_v1_3

LEARNED_PRIORITY = 1


class LearningSwitch(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ports = {}                 # dpid -> {mac: port}
        self.log_path = os.environ.get("LEARNING_SWITCH_LOG")

    def _flow(self, dp, priority, match, actions):
        ofp, parser = dp.ofproto, dp.ofproto_parser
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=priority, match=match,
                                      instructions=inst))

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def on_features(self, ev):
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.ports[dp.id] = {}
        self._flow(dp, 0, parser.OFPMatch(),
                   [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def on_packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"{dp.id:016x} {in_port} {eth.src} {eth.dst}\n")
        table = self.ports.setdefault(dp.id, {})
        table[eth.src] = in_port
        out_port = table.get(eth.dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            self._flow(dp, LEARNED_PRIORITY,
                       parser.OFPMatch(in_port=in_port, eth_src=eth.src, eth_dst=eth.dst), actions)
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                        in_port=in_port, actions=actions, data=msg.data))
