"""AesGcm: AES-GCM (128- or 256-bit key, 12-byte nonce, 16-byte tag) on buffers in place,
through OpenSSL's libcrypto EVP interface.

The key is given to OpenSSL once, when the object is made (one context to encrypt, one to
decrypt); each packet then sets only its nonce, so the per-packet calls are: init with the
nonce, the AAD (an update with no output), the data in place, final, and get/set the tag.
encrypt_c / decrypt_c take no Python objects and run without the GIL; the key schedule is
OpenSSL's (AES-NI and the carry-less multiply where the CPU has them).

One object is used by one thread at a time (the dataplane's), like the contexts it holds.
The Python methods encrypt/decrypt (same shape as cryptography's AESGCM) are for tests
and the control plane.
"""
from libc.stdint cimport uint8_t

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING


cdef class AesGcm:
    def __cinit__(self, key):
        self.enc = NULL
        self.dec = NULL
        cdef bytes k = bytes(key)
        cdef const EVP_CIPHER *cipher
        if len(k) == 16:
            cipher = EVP_aes_128_gcm()
        elif len(k) == 32:
            cipher = EVP_aes_256_gcm()
        else:
            raise ValueError(f"AES-GCM key of {len(k)} bytes: 16 or 32 expected")
        self.key_bits = len(k) * 8
        self.enc = EVP_CIPHER_CTX_new()
        self.dec = EVP_CIPHER_CTX_new()
        if self.enc == NULL or self.dec == NULL:
            raise MemoryError()
        cdef const unsigned char *kp = <const unsigned char *> PyBytes_AS_STRING(k)
        # cipher first, then the nonce length, then the key (kept by OpenSSL from here on)
        if (EVP_EncryptInit_ex(self.enc, cipher, NULL, NULL, NULL) != 1
                or EVP_CIPHER_CTX_ctrl(self.enc, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE_LEN, NULL) != 1
                or EVP_EncryptInit_ex(self.enc, NULL, NULL, kp, NULL) != 1
                or EVP_DecryptInit_ex(self.dec, cipher, NULL, NULL, NULL) != 1
                or EVP_CIPHER_CTX_ctrl(self.dec, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE_LEN, NULL) != 1
                or EVP_DecryptInit_ex(self.dec, NULL, NULL, kp, NULL) != 1):
            ERR_clear_error()
            raise RuntimeError("OpenSSL refused the AES-GCM key")

    def __dealloc__(self):
        # EVP_CIPHER_CTX_free cleanses the key schedule
        if self.enc != NULL:
            EVP_CIPHER_CTX_free(self.enc)
        if self.dec != NULL:
            EVP_CIPHER_CTX_free(self.dec)

    cdef int encrypt_c(self, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                       uint8_t *data, int n, uint8_t *tag) noexcept nogil:
        """Encrypt n bytes at data in place and write the 16-byte tag; 0, or -1 on an
        OpenSSL error."""
        cdef int outl
        if EVP_EncryptInit_ex(self.enc, NULL, NULL, NULL, nonce) != 1:
            ERR_clear_error()
            return -1
        if aad_len and EVP_EncryptUpdate(self.enc, NULL, &outl, aad, aad_len) != 1:
            ERR_clear_error()
            return -1
        if n and EVP_EncryptUpdate(self.enc, data, &outl, data, n) != 1:
            ERR_clear_error()
            return -1
        if (EVP_EncryptFinal_ex(self.enc, data + n, &outl) != 1
                or EVP_CIPHER_CTX_ctrl(self.enc, EVP_CTRL_GCM_GET_TAG, GCM_TAG_LEN, tag) != 1):
            ERR_clear_error()
            return -1
        return 0

    cdef int decrypt_c(self, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                       uint8_t *data, int n, const uint8_t *tag) noexcept nogil:
        """Decrypt n bytes at data in place and check the tag: 0 when it is right, -1 when
        not (the data is then garbage and must be dropped)."""
        cdef int outl
        if EVP_DecryptInit_ex(self.dec, NULL, NULL, NULL, nonce) != 1:
            ERR_clear_error()
            return -1
        if aad_len and EVP_DecryptUpdate(self.dec, NULL, &outl, aad, aad_len) != 1:
            ERR_clear_error()
            return -1
        if n and EVP_DecryptUpdate(self.dec, data, &outl, data, n) != 1:
            ERR_clear_error()
            return -1
        if (EVP_CIPHER_CTX_ctrl(self.dec, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, <void *> tag) != 1
                or EVP_DecryptFinal_ex(self.dec, data + n, &outl) != 1):
            ERR_clear_error()
            return -1
        return 0

    # ---- Python side ----

    def encrypt(self, nonce, data, aad):
        """ciphertext + tag, like cryptography's AESGCM.encrypt."""
        cdef bytes nc = _nonce(nonce), a = bytes(aad or b""), d = bytes(data)
        cdef Py_ssize_t n = len(d)
        out = PyBytes_FromStringAndSize(NULL, n + GCM_TAG_LEN)
        cdef uint8_t *o = <uint8_t *> PyBytes_AS_STRING(out)
        cdef const uint8_t *src = <const uint8_t *> PyBytes_AS_STRING(d)
        cdef Py_ssize_t k
        for k in range(n):
            o[k] = src[k]
        if self.encrypt_c(<const uint8_t *> PyBytes_AS_STRING(nc), <const uint8_t *> PyBytes_AS_STRING(a),
                          len(a), o, n, o + n) != 0:
            raise RuntimeError("AES-GCM encryption failed")
        return out

    def decrypt(self, nonce, data, aad):
        """plaintext of ciphertext + tag; ValueError when the tag is wrong."""
        cdef bytes nc = _nonce(nonce), a = bytes(aad or b""), d = bytes(data)
        cdef Py_ssize_t n = len(d) - GCM_TAG_LEN
        if n < 0:
            raise ValueError("shorter than a tag")
        out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(d), n)
        if self.decrypt_c(<const uint8_t *> PyBytes_AS_STRING(nc), <const uint8_t *> PyBytes_AS_STRING(a),
                          len(a), <uint8_t *> PyBytes_AS_STRING(out), n,
                          <const uint8_t *> PyBytes_AS_STRING(d) + n) != 0:
            raise ValueError("AES-GCM tag mismatch")
        return out

    def __repr__(self):
        return f"<AesGcm {self.key_bits}-bit>"


cdef bytes _nonce(nonce):
    cdef bytes nc = bytes(nonce)
    if len(nc) != GCM_NONCE_LEN:
        raise ValueError(f"AES-GCM nonce of {len(nc)} bytes: {GCM_NONCE_LEN} expected")
    return nc
