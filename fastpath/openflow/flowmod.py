"""FLOW_MOD, flow statistics and flow expiry on a bridge's pipeline (its FlowTable).

Which flows a message selects follows TS-006 6.4: non-strict selects every rule whose
match is at least as specific as the request's (compared on the compiled key words, so
every field behaves alike), strict the one with the same table, priority and match;
cookie/cookie_mask filter both, and deletes and stats also out_port. ADD replaces an
identical rule (same table, priority and match) and, with CHECK_OVERLAP, refuses one that
overlaps another of the same priority. Timeouts are kept on the Flow and enforced by
expire(), called from the agent's timer: never on the packet path.
"""
import time

from fastpath import ofsyntax
from fastpath.nodes.flowtable import covers, match_words
from fastpath.openflow import codec as c
from fastpath.openflow import translate as tr


def request_words(flows, match):
    in_port = flows.resolve_port(match.in_port) if match.in_port is not None else -1
    return match_words(match, in_port)


def overlaps(a, b):
    """Some frame matches both flows (their masks agree wherever both look)."""
    return all((av ^ bv) & am & bm == 0
               for av, am, bv, bm in zip(a.value, a.mask, b.value, b.mask))


def outputs_to(rule, out_port, ports):
    if out_port == c.OFPP_ANY:
        return True
    actions = list(rule.actions) + list(rule.write_actions or ())
    return any(a[0] == "output" and a[1] == out_port for a in tr.from_actions(actions, ports))


def select(flows, ports, table_id, match, strict=False, priority=None, cookie=0, cookie_mask=0,
           out_port=c.OFPP_ANY):
    value, mask = request_words(flows, match)
    if strict and table_id != c.OFPTT_ALL:
        f = flows.identical_to(table_id, priority, value, mask)
        candidates = [f] if f is not None else []
    else:
        candidates = flows if table_id == c.OFPTT_ALL else flows.in_table(table_id)
    out = []
    for f in candidates:
        if table_id != c.OFPTT_ALL and f.rule.table != table_id:
            continue
        if (f.rule.cookie ^ cookie) & cookie_mask:
            continue
        if strict:
            if f.rule.priority != priority or f.value != value or f.mask != mask:
                continue
        elif not covers(value, mask, f.value, f.mask):
            continue
        if outputs_to(f.rule, out_port, ports):
            out.append(f)
    return sorted(out, key=lambda f: (f.rule.table, -f.rule.priority, f.seq))


def flow_mod(flows, ports, fm):
    """Carry out a parsed FLOW_MOD on a FlowTable. Returns (added Flow or None, [removed
    Flows] for FLOW_REMOVED). Raises codec.OFError."""
    n_tables = flows.n_tables
    if fm.command > c.FC_DELETE_STRICT:
        raise c.OFError(c.ET_FLOW_MOD_FAILED, c.FMFC_BAD_COMMAND, f"command {fm.command}")
    deleting = fm.command in (c.FC_DELETE, c.FC_DELETE_STRICT)
    strict = fm.command in (c.FC_MODIFY_STRICT, c.FC_DELETE_STRICT)
    if fm.table_id >= n_tables and not (deleting and fm.table_id == c.OFPTT_ALL):
        raise c.OFError(c.ET_FLOW_MOD_FAILED, c.FMFC_BAD_TABLE_ID, f"table {fm.table_id}")
    if fm.flags & ~(c.FF_SEND_FLOW_REM | c.FF_CHECK_OVERLAP | c.FF_RESET_COUNTS):
        raise c.OFError(c.ET_FLOW_MOD_FAILED, c.FMFC_BAD_FLAGS, f"flags {fm.flags:#x}")
    match = tr.to_match(fm.match, ports)
    if deleting:
        gone = select(flows, ports, fm.table_id, match, strict, fm.priority, fm.cookie,
                      fm.cookie_mask, fm.out_port)
        flows.remove(gone)
        return None, gone
    rule = tr.to_rule(fm.table_id, fm.priority, fm.cookie, fm.instructions, match, ports, n_tables)
    if rule.meter is not None and flows.meter_table.get(rule.meter) is None:
        raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_UNKNOWN_METER, f"meter {rule.meter}")
    if fm.buffer_id != c.NO_BUFFER:
        raise c.OFError(c.ET_BAD_REQUEST, c.BRC_BUFFER_UNKNOWN, "no buffers here")
    try:
        if fm.command == c.FC_ADD:
            flow = flows.compile(rule)
            if fm.flags & c.FF_CHECK_OVERLAP:
                for f in flows.in_table(rule.table):
                    if f.rule.priority == rule.priority \
                            and (f.value, f.mask) != (flow.value, flow.mask) and overlaps(f, flow):
                        raise c.OFError(c.ET_FLOW_MOD_FAILED, c.FMFC_OVERLAP, "overlapping flow")
            flow.idle_timeout, flow.hard_timeout, flow.flags = \
                fm.idle_timeout, fm.hard_timeout, fm.flags
            flow.wire = (rule, list(fm.match), fm.raw_instructions)
            flows.install(flow)
            return flow, []
        for f in select(flows, ports, fm.table_id, match, strict, fm.priority, fm.cookie,
                        fm.cookie_mask):
            new = ofsyntax.FlowRule(f.rule.priority, f.rule.match, rule.actions, f.rule.cookie,
                                    f.rule.table, rule.goto, rule.write_actions,
                                    rule.clear_actions, rule.write_metadata, rule.meter)
            flows.set_actions(f, new)
            wire = getattr(f, "wire", None)
            if wire is not None:
                f.wire = (new, wire[1], fm.raw_instructions)
    except ValueError as e:                 # a port vanished between check and compile
        raise c.OFError(c.ET_FLOW_MOD_FAILED, c.FMFC_UNKNOWN, str(e)) from None
    return None, []


def _wire(flow):
    wire = getattr(flow, "wire", None)
    return wire if wire is not None and wire[0] is flow.rule else None


def match_of(flow, ports):
    """The flow's match as its controller gave it (field order, explicit masks), which a
    controller compares against what it sent; rebuilt from the rule for flows that came
    from fastpathctl or were changed by it since."""
    wire = _wire(flow)
    return wire[1] if wire else tr.from_match(flow.rule.match, ports)


def instructions_of(flow, ports):
    """Likewise the instructions, byte for byte (an output's max_len, empty lists)."""
    wire = _wire(flow)
    return wire[2] if wire else tr.instructions_of(flow.rule, ports)


def expire(flows, timed, now=None):
    """Remove the flows of `timed` (a set, kept up to date here) whose idle or hard timeout
    has passed. Returns [(Flow, reason)] for FLOW_REMOVED."""
    now = time.monotonic() if now is None else now
    out = []
    for f in list(timed):
        if f.id < 0:                        # removed some other way
            timed.discard(f)
            continue
        if f.hard_timeout and now - f.created >= f.hard_timeout:
            out.append((f, c.RR_HARD_TIMEOUT))
            continue
        if f.idle_timeout:
            packets, _ = flows.counters(f)
            if f.last_hit is None:
                f.last_hit = (packets, f.created if packets == 0 else now)
            elif f.last_hit[0] != packets:
                f.last_hit = (packets, now)
            elif now - f.last_hit[1] >= f.idle_timeout:
                out.append((f, c.RR_IDLE_TIMEOUT))
    flows.remove(f for f, _ in out)
    for f, _ in out:
        timed.discard(f)
    return out
