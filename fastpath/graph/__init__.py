"""The core: buffer pool, vectors, nodes and the dispatcher."""
