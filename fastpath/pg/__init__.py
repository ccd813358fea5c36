"""In-memory interfaces (VPP's packet generator, Snabb's selftest sources and sinks)."""
