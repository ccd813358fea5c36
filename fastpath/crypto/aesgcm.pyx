"""AesGcm: AES-GCM (128- or 256-bit key, 12-byte nonce, 16-byte tag) on buffers in place,
with one of two engines:

- "ipsec-mb": intel-ipsec-mb's direct AES-GCM API, the multi-buffer library VPP's ipsecmb
  engine and DPDK's aesni_gcm driver use. The key schedule and GHASH keys are precomputed
  once per key (gcm_key_data, IMB_AES*_GCM_PRE); a packet is then one call, with the
  library's best code for the CPU (VAES/VPCLMULQDQ AVX-512 where there is some). The
  library is opened at run time (dlopen), so a machine without it still runs.
- "openssl": OpenSSL's libcrypto EVP interface, the fallback where intel-ipsec-mb is
  missing or the CPU has no AES-NI. The key is given to OpenSSL once (one context to
  encrypt, one to decrypt); each packet sets its nonce, the AAD, the data, final, and
  gets or sets the tag.

AesGcm(key) takes the best engine there is (ENGINES lists them, IPSEC_MB says which library
and code path, or why not); AesGcm(key, engine=...) asks for one. encrypt_c / decrypt_c
take no Python objects and run without the GIL. Decryption checks the tag in constant
time. One object is used by one thread at a time (the dataplane's): the ipsec-mb manager
is only a table of functions, and the per-packet state lives on the caller's stack.

The Python methods encrypt/decrypt (same shape as cryptography's AESGCM) are for tests
and the control plane.
"""
import os

from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    char *dlerror()
    enum:
        RTLD_NOW
        RTLD_LOCAL

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from "openssl/crypto.h" nogil:
    void OPENSSL_cleanse(void *ptr, size_t n)

ctypedef IMB_MGR *(*alloc_mb_mgr_f)(uint64_t flags) noexcept nogil
ctypedef void (*init_mb_mgr_auto_f)(IMB_MGR *mgr, IMB_ARCH *arch) noexcept nogil
ctypedef const char *(*imb_get_version_str_f)() noexcept nogil

cdef IMB_MGR *_mb_mgr = NULL
IPSEC_MB = None         # e.g. "intel-ipsec-mb 1.3.0, AVX512", when the engine can run
IPSEC_MB_UNUSABLE = ""  # else why not
ARCH_NAMES = {IMB_ARCH_NOAESNI: "no AES-NI", IMB_ARCH_SSE: "SSE", IMB_ARCH_AVX: "AVX",
              IMB_ARCH_AVX2: "AVX2", IMB_ARCH_AVX512: "AVX512"}


def _open_ipsec_mb():
    """Open libIPSec_MB and make the manager (once per process); FASTPATH_IPSEC_MB=off
    turns the engine off (OpenSSL everywhere)."""
    global _mb_mgr, IPSEC_MB, IPSEC_MB_UNUSABLE
    cdef void *lib
    cdef alloc_mb_mgr_f alloc_mgr
    cdef init_mb_mgr_auto_f init_auto
    cdef imb_get_version_str_f version
    cdef IMB_MGR *mgr
    cdef IMB_ARCH arch = IMB_ARCH_NONE
    if os.environ.get("FASTPATH_IPSEC_MB", "") == "off":
        IPSEC_MB_UNUSABLE = "turned off (FASTPATH_IPSEC_MB=off)"
        return
    lib = dlopen(b"libIPSec_MB.so.1", RTLD_NOW | RTLD_LOCAL)
    if lib == NULL:
        IPSEC_MB_UNUSABLE = (dlerror() or b"libIPSec_MB.so.1 not found").decode(errors="replace")
        return
    alloc_mgr = <alloc_mb_mgr_f> dlsym(lib, b"alloc_mb_mgr")
    init_auto = <init_mb_mgr_auto_f> dlsym(lib, b"init_mb_mgr_auto")
    version = <imb_get_version_str_f> dlsym(lib, b"imb_get_version_str")
    if alloc_mgr == NULL or init_auto == NULL or version == NULL:
        IPSEC_MB_UNUSABLE = "libIPSec_MB.so.1 lacks alloc_mb_mgr/init_mb_mgr_auto (older than 1.3?)"
        return
    mgr = alloc_mgr(0)
    if mgr == NULL:
        IPSEC_MB_UNUSABLE = "alloc_mb_mgr failed"
        return
    init_auto(mgr, &arch)
    if arch < IMB_ARCH_SSE:
        IPSEC_MB_UNUSABLE = f"the CPU has no AES-NI ({ARCH_NAMES.get(arch, 'no usable code path')})"
        return                          # the manager stays allocated: a few KiB, once
    _mb_mgr = mgr
    IPSEC_MB = f"intel-ipsec-mb {version().decode()}, {ARCH_NAMES[arch]}"


_open_ipsec_mb()
ENGINES = (("ipsec-mb",) if IPSEC_MB else ()) + ("openssl",)


cdef class AesGcm:
    def __cinit__(self, key, engine=None):
        self.enc = NULL
        self.dec = NULL
        self.mb = NULL
        self.kd = NULL
        self.kd_mem = NULL
        cdef bytes k = bytes(key)
        cdef const EVP_CIPHER *cipher
        if len(k) == 16:
            cipher = EVP_aes_128_gcm()
        elif len(k) == 32:
            cipher = EVP_aes_256_gcm()
        else:
            raise ValueError(f"AES-GCM key of {len(k)} bytes: 16 or 32 expected")
        self.key_bits = len(k) * 8
        if engine is None:
            engine = ENGINES[0]
        if engine not in ("ipsec-mb", "openssl"):
            raise ValueError(f"unknown AES-GCM engine {engine!r} (ipsec-mb or openssl)")
        if engine == "ipsec-mb" and _mb_mgr == NULL:
            raise ValueError(f"the ipsec-mb engine cannot run here: {IPSEC_MB_UNUSABLE}")
        self.engine = engine
        cdef const unsigned char *kp = <const unsigned char *> PyBytes_AS_STRING(k)
        if engine == "ipsec-mb":
            # the key schedule is read with aligned AVX-512 loads
            if posix_memalign(&self.kd_mem, 64, sizeof(gcm_key_data)) != 0:
                raise MemoryError()
            self.kd = <gcm_key_data *> self.kd_mem
            self.mb = _mb_mgr
            if self.key_bits == 128:
                IMB_AES128_GCM_PRE(self.mb, kp, self.kd)
            else:
                IMB_AES256_GCM_PRE(self.mb, kp, self.kd)
            return
        self.enc = EVP_CIPHER_CTX_new()
        self.dec = EVP_CIPHER_CTX_new()
        if self.enc == NULL or self.dec == NULL:
            raise MemoryError()
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
        if self.kd_mem != NULL:
            OPENSSL_cleanse(self.kd_mem, sizeof(gcm_key_data))
            free(self.kd_mem)
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
        cdef gcm_context_data ctx
        if self.mb != NULL:
            if self.key_bits == 128:
                IMB_AES128_GCM_ENC(self.mb, self.kd, &ctx, data, data, n, nonce, aad, aad_len,
                                   tag, GCM_TAG_LEN)
            else:
                IMB_AES256_GCM_ENC(self.mb, self.kd, &ctx, data, data, n, nonce, aad, aad_len,
                                   tag, GCM_TAG_LEN)
            return 0
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
        cdef int outl, i
        cdef gcm_context_data ctx
        cdef uint8_t want[GCM_TAG_LEN]
        cdef uint8_t diff = 0
        if self.mb != NULL:
            if self.key_bits == 128:
                IMB_AES128_GCM_DEC(self.mb, self.kd, &ctx, data, data, n, nonce, aad, aad_len,
                                   want, GCM_TAG_LEN)
            else:
                IMB_AES256_GCM_DEC(self.mb, self.kd, &ctx, data, data, n, nonce, aad, aad_len,
                                   want, GCM_TAG_LEN)
            for i in range(GCM_TAG_LEN):        # constant time: no early exit
                diff |= want[i] ^ tag[i]
            return 0 if diff == 0 else -1
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
        # a fresh object (NULL): CPython hands out shared ones for 0 and 1 bytes of data,
        # which decrypting in place would overwrite
        out = PyBytes_FromStringAndSize(NULL, n)
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(d), n)
        if self.decrypt_c(<const uint8_t *> PyBytes_AS_STRING(nc), <const uint8_t *> PyBytes_AS_STRING(a),
                          len(a), <uint8_t *> PyBytes_AS_STRING(out), n,
                          <const uint8_t *> PyBytes_AS_STRING(d) + n) != 0:
            raise ValueError("AES-GCM tag mismatch")
        return out

    def __repr__(self):
        return f"<AesGcm {self.key_bits}-bit {self.engine}>"


cdef bytes _nonce(nonce):
    cdef bytes nc = bytes(nonce)
    if len(nc) != GCM_NONCE_LEN:
        raise ValueError(f"AES-GCM nonce of {len(nc)} bytes: {GCM_NONCE_LEN} expected")
    return nc
