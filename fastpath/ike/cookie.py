"""Stateless cookies for an IKE responder under load (RFC 7296 2.6).

While a tunnel has `threshold` or more half-open responder SAs (IKE_SA_INIT answered,
IKE_AUTH not yet come), an IKE_SA_INIT request that does not start with a valid
N(COOKIE) is answered with one and nothing is kept: no DH, no SA. The cookie is

    version (1 byte) || HMAC-SHA256(secret[version], Ni | IPi | SPIi)[:16]

so only an initiator that receives at the address it claims can return it. The secret
is replaced every SECRET_LIFETIME seconds; the previous one stays valid, so a cookie
handed out just before a change still works for one more period. Beyond `limit`
half-open SAs even a valid cookie creates nothing: memory stays bounded whatever
arrives.
"""
import hashlib
import hmac
import os

# A tunnel's IKE messages are those from its peer's address, so these count per address
# (strongSwan 5.9: cookie_threshold 30 in all, cookie_threshold_ip 3, block_threshold 5).
COOKIE_THRESHOLD = 10       # half-open SAs per tunnel at which cookies are asked for
HALF_OPEN_LIMIT = 200       # half-open SAs per tunnel beyond which nothing new is kept
SECRET_LIFETIME = 60.0
COOKIE_LEN = 17


class Cookies:
    def __init__(self, threshold=COOKIE_THRESHOLD, limit=HALF_OPEN_LIMIT):
        self.threshold, self.limit = threshold, max(limit, threshold)
        self.version = 0
        self.secrets = {0: os.urandom(32)}
        self.rotated_at = None

    def _rotate(self, now):
        if self.rotated_at is None:
            self.rotated_at = now
        if now - self.rotated_at >= SECRET_LIFETIME:
            # long idle: the previous secret is older than one period, so it goes too
            previous = self.secrets[self.version] if now - self.rotated_at < 2 * SECRET_LIFETIME else os.urandom(32)
            self.version = (self.version + 1) & 0xff
            self.secrets = {self.version: os.urandom(32), (self.version - 1) & 0xff: previous}
            self.rotated_at = now

    def _mac(self, version, ni, ip, spi_i):
        return hmac.new(self.secrets[version], ni + ip + spi_i, hashlib.sha256).digest()[:COOKIE_LEN - 1]

    def make(self, now, ni, ip, spi_i):
        """The cookie for an initiator's nonce, address (4 bytes) and SPI."""
        self._rotate(now)
        return bytes([self.version]) + self._mac(self.version, ni, ip, spi_i)

    def valid(self, now, cookie, ni, ip, spi_i):
        self._rotate(now)
        if len(cookie) != COOKIE_LEN or cookie[0] not in self.secrets:
            return False
        return hmac.compare_digest(cookie[1:], self._mac(cookie[0], ni, ip, spi_i))

    def required(self, half_open):
        return half_open >= self.threshold
