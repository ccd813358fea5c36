"""fastpathctl's OpenFlow commands, in ovs-vsctl's words:

    set-controller BR TARGET...     tcp:IP[:PORT] (active) and ptcp:PORT[:IP] (passive)
    del-controller BR
    get-controller BR
    set-fail-mode BR standalone|secure

(`set bridge BR other_config:datapath-id=HEX protocols=OpenFlow13` is `set bridge`'s.)
Each takes the Control and (args, as_json) like Control's own commands, checks every
argument before it changes anything, and raises CommandError in one line.
"""
from fastpath.openflow import agent as of_agent
from fastpath.openflow.connection import parse_target

HELP = [
    ("set-controller", "BR TARGET...", "OpenFlow 1.3 controllers: tcp:IP[:PORT], ptcp:PORT[:IP]"),
    ("del-controller", "BR", "remove the bridge's controllers"),
    ("get-controller", "BR", "the bridge's controllers"),
    ("set-fail-mode", "BR standalone|secure", "without a controller: NORMAL, or flows only"),
]


def _error(text):
    from fastpath.control import CommandError
    return CommandError(text)


def set_controller(control, args, as_json):
    br = control._bridge(args[0])
    targets = args[1:]
    for t in targets:
        try:
            parse_target(t)
        except ValueError as e:
            raise _error(str(e)) from None
    if len(set(targets)) != len(targets):
        raise _error("set-controller: a target is given twice")
    try:
        of_agent.set_controller(control.switch, br, targets)
    except OSError as e:
        raise _error(f"set-controller: {e.strerror or e}") from None
    return control._done(as_json)


def del_controller(control, args, as_json):
    of_agent.set_controller(control.switch, control._bridge(args[0]), [])
    return control._done(as_json)


def get_controller(control, args, as_json):
    br = control._bridge(args[0])
    status = dict(br.agent.status()) if br.agent else {}
    if as_json:
        return [{"target": t, "connected": bool(status.get(t))} for t in br.controllers]
    return "\n".join(br.controllers)


def set_fail_mode(control, args, as_json):
    br = control._bridge(args[0])
    mode = args[1]
    if mode not in ("standalone", "secure"):
        raise _error(f"set-fail-mode: {mode!r} is not standalone or secure")
    br.fail_mode = mode
    if mode == "secure" and br.flows.is_default:
        # OVS never installs its NORMAL flow on a secure bridge: forward nothing by default
        control.switch.del_flows(br.name)
    if br.agent is not None:
        br.agent.tick_fail_mode()
    control.switch.apply_flows(br.name)
    return control._done(as_json)


COMMANDS = {
    "set-controller": (set_controller, 2, None),
    "del-controller": (del_controller, 1, 1),
    "get-controller": (get_controller, 1, 1),
    "set-fail-mode": (set_fail_mode, 2, 2),
}
