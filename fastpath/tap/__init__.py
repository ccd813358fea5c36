"""Linux TAP devices: the host stack on one side, the dataplane on the other."""
