"""What fastpath offers and accepts in SA payloads and traffic selectors, and the
choice a responder makes (RFC 7296 2.7, 3.3; 2.9 for selectors)."""
import ipaddress
from dataclasses import dataclass

from fastpath.ike import message as m
from fastpath.ike.crypto import GROUP_NAMES, INTEG_NAMES, PRF_NAMES

IKE_ENCR_BITS = (128, 256)
IKE_ENCRS = (m.ENCR_AES_GCM_16, m.ENCR_AES_CBC)     # in order of preference
IKE_INTEGS = (m.INTEG_HMAC_SHA2_256_128, m.INTEG_HMAC_SHA2_384_192, m.INTEG_HMAC_SHA2_512_256)
IKE_PRFS = (m.PRF_HMAC_SHA2_256, m.PRF_HMAC_SHA2_384, m.PRF_HMAC_SHA2_512)
IKE_GROUPS = (19, 20, 31, 14)
ESP_ENCR_BITS = (128, 256)
VXLAN_PORT = 4789


@dataclass
class IkeChoice:
    encr_bits: int
    prf: int
    group: int
    encr: int = m.ENCR_AES_GCM_16
    integ: int = 0                     # with AES-CBC; 0 with GCM

    def __str__(self):
        if self.integ:
            return (f"aes{self.encr_bits}-{INTEG_NAMES[self.integ]}-{PRF_NAMES[self.prf]}-"
                    f"{GROUP_NAMES[self.group]}")
        return f"aes{self.encr_bits}gcm16-{PRF_NAMES[self.prf]}-{GROUP_NAMES[self.group]}"


@dataclass
class EspChoice:
    encr_bits: int
    esn: bool
    spi: bytes = b""                   # the SPI the proposal carried
    group: int = 0                     # PFS DH group of a CREATE_CHILD_SA, 0 for none

    def __str__(self):
        return f"aes{self.encr_bits}gcm16-{'esn' if self.esn else 'noesn'}"


def ike_proposal(encr_bits, prfs, groups, spi=b""):
    """One IKE proposal offering every combination of what fastpath supports."""
    ts = [m.Transform(m.T_ENCR, m.ENCR_AES_GCM_16, bits) for bits in encr_bits]
    ts += [m.Transform(m.T_PRF, p) for p in prfs]
    ts += [m.Transform(m.T_DH, g) for g in groups]
    return m.Proposal(1, m.PROTO_IKE, spi, ts)


def ike_proposals(encr_bits, prfs, groups, encrs=IKE_ENCRS, integs=IKE_INTEGS, spi=b""):
    """AES-GCM and AES-CBC+HMAC in separate proposals: RFC 7296 3.3 keeps AEAD ciphers
    out of proposals with integrity algorithms."""
    out = []
    for encr in encrs:
        if encr == m.ENCR_AES_GCM_16:
            p = ike_proposal(encr_bits, prfs, groups, spi)
        elif integs and any(integs):
            ts = [m.Transform(m.T_ENCR, m.ENCR_AES_CBC, bits) for bits in encr_bits]
            ts += [m.Transform(m.T_PRF, p) for p in prfs]
            ts += [m.Transform(m.T_INTEG, i) for i in integs if i]
            ts += [m.Transform(m.T_DH, g) for g in groups]
            p = m.Proposal(1, m.PROTO_IKE, spi, ts)
        else:
            continue
        p.num = len(out) + 1
        out.append(p)
    return out


def choice_proposals(choice, spi):
    """An IKE SA rekey offers exactly the algorithms of the SA it replaces."""
    return ike_proposals((choice.encr_bits,), (choice.prf,), (choice.group,), (choice.encr,),
                         (choice.integ,), spi)


def _ike_cipher(prop, encr_bits, encrs, integs):
    """-> (ENCR transform, INTEG transform or None) acceptable in prop, or None."""
    if _aead_only(prop):
        if m.ENCR_AES_GCM_16 not in encrs:
            return None
        encr = _first(prop, m.T_ENCR, lambda t: t.id == m.ENCR_AES_GCM_16 and t.key_length in encr_bits)
        return (encr, None) if encr else None
    if m.ENCR_AES_CBC not in encrs:
        return None
    encr = _first(prop, m.T_ENCR, lambda t: t.id == m.ENCR_AES_CBC and t.key_length in encr_bits)
    integ = _first(prop, m.T_INTEG, lambda t: t.id in integs and t.id)
    return (encr, integ) if encr and integ else None


def esp_proposal(encr_bits, esns, spi, group=0):
    ts = [m.Transform(m.T_ENCR, m.ENCR_AES_GCM_16, bits) for bits in encr_bits]
    if group:
        ts.append(m.Transform(m.T_DH, group))            # PFS in a CREATE_CHILD_SA
    ts += [m.Transform(m.T_ESN, m.ESN_YES if e else m.ESN_NO) for e in esns]
    return m.Proposal(1, m.PROTO_ESP, spi, ts)


def _aead_only(prop):
    """An AEAD proposal has no integrity algorithm, or only NONE."""
    return all(t.id == m.INTEG_NONE for t in prop.of_type(m.T_INTEG))


def _first(prop, ttype, accept):
    return next((t for t in prop.of_type(ttype) if accept(t)), None)


def choose_ike(proposals, encr_bits, prfs, groups, ke_group=None, encrs=IKE_ENCRS, integs=IKE_INTEGS):
    """The responder's choice -> (Proposal echoing it, IkeChoice), or None. Among a
    proposal's DH groups the one the peer's KE already uses is taken when acceptable,
    sparing a round trip of INVALID_KE_PAYLOAD."""
    for prop in proposals:
        if prop.protocol != m.PROTO_IKE or len(prop.spi) not in (0, 8):
            continue
        cipher = _ike_cipher(prop, encr_bits, encrs, integs)
        prf = _first(prop, m.T_PRF, lambda t: t.id in prfs)
        dhs = [t for t in prop.of_type(m.T_DH) if t.id in groups]
        if not (cipher and prf and dhs):
            continue
        encr, integ = cipher
        dh = next((t for t in dhs if t.id == ke_group), dhs[0])
        if integ:
            chosen = [encr, prf, integ, dh]
        else:
            chosen = [encr, prf, dh] + ([m.Transform(m.T_INTEG, m.INTEG_NONE)] if prop.of_type(m.T_INTEG) else [])
        return (m.Proposal(prop.num, m.PROTO_IKE, b"", chosen),
                IkeChoice(encr.key_length, prf.id, dh.id, encr.id, integ.id if integ else 0))
    return None


def check_ike_reply(proposals, encr_bits, prfs, groups, encrs=IKE_ENCRS, integs=IKE_INTEGS):
    """The initiator checks the responder's one proposal is one it offered -> IkeChoice or None."""
    if len(proposals) != 1:
        return None
    prop = proposals[0]
    if prop.protocol != m.PROTO_IKE:
        return None
    e, p, d = prop.of_type(m.T_ENCR), prop.of_type(m.T_PRF), prop.of_type(m.T_DH)
    i = [t for t in prop.of_type(m.T_INTEG) if t.id]
    if len(e) != 1 or len(p) != 1 or len(d) != 1 or len(i) > 1:
        return None
    cipher = _ike_cipher(prop, encr_bits, encrs, integs)
    if cipher is None or cipher[0] is not e[0] or p[0].id not in prfs or d[0].id not in groups:
        return None
    integ = cipher[1].id if cipher[1] else 0
    return IkeChoice(e[0].key_length, p[0].id, d[0].id, e[0].id, integ)


def choose_esp(proposals, encr_bits, esns, groups=None, ke_group=None):
    """-> (the peer's Proposal, EspChoice) for the first acceptable ESP proposal, or None.
    A proposal without an ESN transform means no ESN. groups: None in IKE_AUTH (no PFS
    there); in a CREATE_CHILD_SA the DH groups accepted for PFS, the one of the peer's KE
    (ke_group) preferred, no DH transform (or NONE) meaning no PFS."""
    for prop in proposals:
        if prop.protocol != m.PROTO_ESP or len(prop.spi) != 4 or not _aead_only(prop):
            continue
        dh_ids = [t.id for t in prop.of_type(m.T_DH)]
        group = 0
        if groups is None:
            if any(dh_ids):
                continue                              # PFS in IKE_AUTH: not ours to give
        else:
            ok = [g for g in dh_ids if g and g in groups]
            if ke_group in ok:
                group = ke_group
            elif not dh_ids or 0 in dh_ids:
                group = 0
            elif ok:
                group = ok[0]                         # the peer's KE is for another group
            else:
                continue
        encr = _first(prop, m.T_ENCR, lambda t: t.id == m.ENCR_AES_GCM_16 and t.key_length in encr_bits)
        offered = [t.id == m.ESN_YES for t in prop.of_type(m.T_ESN)] or [False]
        esn = next((e for e in offered if e in esns), None)
        if encr and esn is not None:
            return prop, EspChoice(encr.key_length, esn, prop.spi, group)
    return None


def esp_reply(prop, choice, our_spi):
    """The responder's SA payload: the chosen transforms, under our SPI."""
    ts = [m.Transform(m.T_ENCR, m.ENCR_AES_GCM_16, choice.encr_bits),
          m.Transform(m.T_ESN, m.ESN_YES if choice.esn else m.ESN_NO)]
    if choice.group:
        ts.append(m.Transform(m.T_DH, choice.group))
    return m.Proposal(prop.num, m.PROTO_ESP, our_spi, ts)


def check_esp_reply(proposals, encr_bits, esns, group=None):
    """group: None in IKE_AUTH; in a CREATE_CHILD_SA the PFS group offered (0: none)."""
    if len(proposals) != 1:
        return None
    r = choose_esp(proposals, encr_bits, esns, None if group is None else (group,) if group else (), group)
    if r is None or len(r[0].of_type(m.T_ENCR)) != 1 or len(r[0].of_type(m.T_ESN)) > 1:
        return None
    if group is not None and r[1].group != group:
        return None
    return r[1]


# ---- traffic selectors: the two gateways, UDP 4789 (the VXLAN overlay) ----

def vxlan_selector(ip):
    return m.TrafficSelector(m.IP_PROTO_UDP, VXLAN_PORT, VXLAN_PORT, ip, ip)


def covers(ts, ip):
    """Whether selector ts includes UDP port 4789 at address ip."""
    a = ipaddress.IPv4Address(ip)
    return (ts.protocol in (0, m.IP_PROTO_UDP) and ts.start_port <= VXLAN_PORT <= ts.end_port
            and ipaddress.IPv4Address(ts.start_addr) <= a <= ipaddress.IPv4Address(ts.end_addr))


def narrow(tsi, tsr, initiator_ip, responder_ip):
    """The responder narrows the proposed selectors to exactly the two gateways' UDP 4789
    -> (TSi, TSr) or None (TS_UNACCEPTABLE)."""
    if any(covers(t, initiator_ip) for t in tsi) and any(covers(t, responder_ip) for t in tsr):
        return [vxlan_selector(initiator_ip)], [vxlan_selector(responder_ip)]
    return None
