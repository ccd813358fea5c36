"""IPsec crypto: AES-GCM over OpenSSL's libcrypto (aesgcm) and ESP security associations
(sa: keys, sequence numbers, the anti-replay window, counters). The ESP nodes that use them
are in fastpath/nodes/esp.pyx."""
