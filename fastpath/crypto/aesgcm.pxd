from libc.stdint cimport uint8_t, uint64_t

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    enum:
        EVP_CTRL_GCM_SET_IVLEN
        EVP_CTRL_GCM_GET_TAG
        EVP_CTRL_GCM_SET_TAG
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
    const EVP_CIPHER *EVP_aes_128_gcm()
    const EVP_CIPHER *EVP_aes_256_gcm()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)

cdef extern from "openssl/err.h" nogil:
    void ERR_clear_error()

# intel-ipsec-mb's direct AES-GCM API: the IMB_* names are macros calling through the
# manager's function table, so only the manager's set-up needs the library's symbols
# (looked up at run time: a machine without the library falls back to OpenSSL)
cdef extern from "intel-ipsec-mb.h" nogil:
    ctypedef struct IMB_MGR:
        pass
    struct gcm_key_data:
        pass
    struct gcm_context_data:
        pass
    ctypedef enum IMB_ARCH:
        IMB_ARCH_NONE
        IMB_ARCH_NOAESNI
        IMB_ARCH_SSE
        IMB_ARCH_AVX
        IMB_ARCH_AVX2
        IMB_ARCH_AVX512
    void IMB_AES128_GCM_PRE(IMB_MGR *mgr, const void *key, gcm_key_data *kd)
    void IMB_AES256_GCM_PRE(IMB_MGR *mgr, const void *key, gcm_key_data *kd)
    void IMB_AES128_GCM_ENC(IMB_MGR *mgr, const gcm_key_data *kd, gcm_context_data *ctx,
                            uint8_t *out, const uint8_t *inp, uint64_t n, const uint8_t *iv,
                            const uint8_t *aad, uint64_t aad_len, uint8_t *tag, uint64_t tag_len)
    void IMB_AES256_GCM_ENC(IMB_MGR *mgr, const gcm_key_data *kd, gcm_context_data *ctx,
                            uint8_t *out, const uint8_t *inp, uint64_t n, const uint8_t *iv,
                            const uint8_t *aad, uint64_t aad_len, uint8_t *tag, uint64_t tag_len)
    void IMB_AES128_GCM_DEC(IMB_MGR *mgr, const gcm_key_data *kd, gcm_context_data *ctx,
                            uint8_t *out, const uint8_t *inp, uint64_t n, const uint8_t *iv,
                            const uint8_t *aad, uint64_t aad_len, uint8_t *tag, uint64_t tag_len)
    void IMB_AES256_GCM_DEC(IMB_MGR *mgr, const gcm_key_data *kd, gcm_context_data *ctx,
                            uint8_t *out, const uint8_t *inp, uint64_t n, const uint8_t *iv,
                            const uint8_t *aad, uint64_t aad_len, uint8_t *tag, uint64_t tag_len)

cdef enum:
    GCM_NONCE_LEN = 12          # salt (4) + explicit IV (8), RFC 4106 4
    GCM_TAG_LEN = 16


cdef class AesGcm:
    cdef EVP_CIPHER_CTX *enc
    cdef EVP_CIPHER_CTX *dec
    cdef IMB_MGR *mb                    # the ipsec-mb engine's manager, or NULL: OpenSSL
    cdef gcm_key_data *kd               # its precomputed key schedule and hash keys
    cdef void *kd_mem
    cdef readonly int key_bits
    cdef readonly str engine

    cdef int encrypt_c(self, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                       uint8_t *data, int n, uint8_t *tag) noexcept nogil
    cdef int decrypt_c(self, const uint8_t *nonce, const uint8_t *aad, int aad_len,
                       uint8_t *data, int n, const uint8_t *tag) noexcept nogil
