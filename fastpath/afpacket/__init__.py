"""Linux interfaces through AF_PACKET mmap rings (TPACKET_V3 receive, TPACKET_V2 transmit)."""
