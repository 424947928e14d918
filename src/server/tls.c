/*
 * estuary - the TLS policy of the listeners: SSL_CTX, session ticket keys, OCSP stapling.
 * See tls.h and docs/tls.md.
 */
#include "server/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <h2o.h>

#include "common/file.h"
#include "common/log.h"

/* ---- the ticket key ring ---------------------------------------------------------------- */

static int make_key(est_ticket_key_t *k)
{
    return RAND_bytes(k->name, sizeof(k->name)) == 1 && RAND_bytes(k->aes_key, sizeof(k->aes_key)) == 1 &&
                   RAND_bytes(k->hmac_key, sizeof(k->hmac_key)) == 1
               ? 0
               : -1;
}

int est_ticket_ring_init(est_ticket_ring_t *r, unsigned interval_s, unsigned keep_old, uint64_t now)
{
    memset(r, 0, sizeof(*r));
    if (interval_s == 0 || keep_old >= EST_TICKET_KEYS_MAX || make_key(&r->keys[0]) != 0)
        return -1;
    if (pthread_rwlock_init(&r->lock, NULL) != 0) {
        OPENSSL_cleanse(r->keys, sizeof(r->keys));
        return -1;
    }
    r->interval_s = interval_s;
    r->keep_old = keep_old;
    r->current_since = now;
    r->num_keys = 1;
    return 0;
}

void est_ticket_ring_dispose(est_ticket_ring_t *r)
{
    pthread_rwlock_destroy(&r->lock);
    OPENSSL_cleanse(r->keys, sizeof(r->keys));
    r->num_keys = 0;
}

static int rotation_due(const est_ticket_ring_t *r, uint64_t now)
{
    return now >= r->current_since && now - r->current_since >= r->interval_s;
}

/* with the lock held exclusively: one rotation per interval elapsed. A key that was current
 * N rotations ago is kept while N <= keep_old. After keep_old + 1 rotations nothing of the
 * old ring is left, so at most that many are made (the in-between keys never encrypted and
 * are only placeholders that age out like the others). */
static int advance(est_ticket_ring_t *r, uint64_t now)
{
    if (!rotation_due(r, now))
        return 0;
    uint64_t due = (now - r->current_since) / r->interval_s;
    uint64_t steps = due < r->keep_old + 1 ? due : r->keep_old + 1;
    for (uint64_t i = 0; i != steps; ++i) {
        est_ticket_key_t fresh;
        if (make_key(&fresh) != 0) {
            OPENSSL_cleanse(&fresh, sizeof(fresh));
            return -1; /* the ring stays as it was (consistent), the next handshake retries */
        }
        size_t n = r->num_keys < r->keep_old + 1 ? r->num_keys + 1 : r->keep_old + 1;
        OPENSSL_cleanse(&r->keys[n - 1], sizeof(r->keys[0])); /* the oldest one, when dropped */
        memmove(r->keys + 1, r->keys, (n - 1) * sizeof(r->keys[0]));
        r->keys[0] = fresh;
        r->num_keys = n;
        OPENSSL_cleanse(&fresh, sizeof(fresh));
    }
    r->current_since += due * r->interval_s;
    return 0;
}

/* takes the lock: shared, or exclusive (rotating) when a rotation is due; either way the caller unlocks */
static void lock_current(est_ticket_ring_t *r, uint64_t now)
{
    pthread_rwlock_rdlock(&r->lock);
    if (!rotation_due(r, now))
        return;
    pthread_rwlock_unlock(&r->lock);
    pthread_rwlock_wrlock(&r->lock);
    advance(r, now); /* re-checks: another thread may have rotated in between */
}

int est_ticket_ring_encrypt_key(est_ticket_ring_t *r, uint64_t now, est_ticket_key_t *out)
{
    lock_current(r, now);
    int ret = -1;
    if (r->num_keys != 0 && !rotation_due(r, now)) { /* due still: the rotation failed, issue no ticket */
        *out = r->keys[0];
        ret = 0;
    }
    pthread_rwlock_unlock(&r->lock);
    return ret;
}

int est_ticket_ring_decrypt_key(est_ticket_ring_t *r, uint64_t now, const unsigned char *name, est_ticket_key_t *out)
{
    lock_current(r, now);
    int ret = 0;
    for (size_t i = 0; i != r->num_keys; ++i)
        if (CRYPTO_memcmp(r->keys[i].name, name, EST_TICKET_NAME_LEN) == 0) {
            *out = r->keys[i];
            ret = i == 0 ? 1 : 2;
            break;
        }
    pthread_rwlock_unlock(&r->lock);
    return ret;
}

/* ---- process-wide state ----------------------------------------------------------------- */

/* one ring for the process: every listener's SSL_CTX of every generation uses it, so tickets
 * stay valid across reloads. It lives until exit (its keys are static storage). */
static est_ticket_ring_t ticket_ring;
static int ocsp_ex_index = -1;
static int tls_init_result = -1;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static uint64_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts); /* BOOTTIME: a key's age counts time spent suspended too */
    return (uint64_t)ts.tv_sec;
}

/* the OCSP response attached to an SSL_CTX (ex_data, freed with the SSL_CTX, which live
 * connections keep alive after their generation is gone) */
typedef struct {
    size_t len;
    unsigned char der[];
} ocsp_blob_t;

static void ocsp_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void tls_init_once(void)
{
    if ((ocsp_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ocsp_ex_free)) < 0)
        return;
    if (est_ticket_ring_init(&ticket_ring, EST_TLS_TICKET_ROTATE_S, EST_TLS_TICKET_KEEP_OLD, now_s()) != 0)
        return;
    tls_init_result = 0;
}

/* ---- callbacks (worker threads, during handshakes) --------------------------------------- */

static int set_ticket_keys(const est_ticket_key_t *k, unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac_key, sizeof(k->hmac_key)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    int ok = enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes_key, iv)
                 : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes_key, iv);
    return ok == 1 && EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/*
 * RFC 5077 section 4 ticket protection, as OpenSSL's ticket callback wants it: AES-256-CBC
 * then HMAC-SHA256 over the ticket, keys from the ring. Encrypting (enc = 1) returns 1, or 0
 * for "no ticket"; decrypting returns 1 (key current), 2 (valid, but renew the ticket under
 * the current key), 0 (unknown key: full handshake), -1 on an internal error.
 */
static int ticket_key_cb(SSL *s, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    (void)s;
    est_ticket_key_t k;
    int ret;
    if (enc) {
        if (est_ticket_ring_encrypt_key(&ticket_ring, now_s(), &k) != 0)
            return 0;
        memcpy(key_name, k.name, EST_TICKET_NAME_LEN);
        ret = RAND_bytes(iv, 16) == 1 && set_ticket_keys(&k, iv, cctx, hctx, 1) == 0 ? 1 : -1;
    } else {
        ret = est_ticket_ring_decrypt_key(&ticket_ring, now_s(), key_name, &k);
        if (ret != 0 && set_ticket_keys(&k, iv, cctx, hctx, 0) != 0)
            ret = -1;
    }
    OPENSSL_cleanse(&k, sizeof(k));
    return ret;
}

/* status_request (RFC 6066 section 8): staple the response read at generation build. OpenSSL
 * calls this only when the client asked; it frees the copy handed over. */
static int ocsp_status_cb(SSL *s, void *arg)
{
    const ocsp_blob_t *b = arg;
    unsigned char *copy;
    if (b == NULL || (copy = OPENSSL_memdup(b->der, b->len)) == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_set_tlsext_status_ocsp_resp(s, copy, (long)b->len) != 1) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* ---- building the SSL_CTX (main thread) ---------------------------------------------------- */

static const char *ssl_error(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, size, "unknown error");
    else
        ERR_error_string_n(e, buf, size);
    ERR_clear_error();
    return buf;
}

/* reads the whole of `path` (a regular file, 1..max bytes) into a new ocsp_blob_t */
static ocsp_blob_t *read_ocsp_file(const char *path, char *err, size_t err_size)
{
    char *buf;
    size_t len;
    ocsp_blob_t *b = NULL;
    if (est_read_file(path, EST_TLS_OCSP_MAX_BYTES, &buf, &len, err, err_size) != 0)
        return NULL;
    if (len == 0) {
        snprintf(err, err_size, "the file is empty");
    } else if ((b = malloc(sizeof(*b) + len)) == NULL) {
        snprintf(err, err_size, "out of memory");
    } else {
        b->len = len;
        memcpy(b->der, buf, len);
    }
    free(buf);
    return b;
}

/* parses the response (an error when it does not) and warns about what would make clients
 * ignore it: a status other than successful, a nextUpdate in the past, no answer for the
 * certificate's serial number, a certificate status other than good */
static int check_ocsp(const est_listen_conf_t *l, SSL_CTX *ctx, const ocsp_blob_t *b)
{
    const unsigned char *p = b->der;
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)b->len);
    if (resp == NULL || p != b->der + b->len) {
        ERR_clear_error();
        OCSP_RESPONSE_free(resp);
        est_log_error("listen %s:%u: %s is not a DER-encoded OCSP response", l->host, l->port, l->ocsp_file);
        return -1;
    }
    int status = OCSP_response_status(resp);
    OCSP_BASICRESP *bs = NULL;
    if (status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        est_log_warn("listen %s:%u: the OCSP response in %s has status \"%s\", not \"successful\"; clients will ignore it", l->host,
                     l->port, l->ocsp_file, OCSP_response_status_str(status));
    } else if ((bs = OCSP_response_get1_basic(resp)) == NULL) {
        est_log_warn("listen %s:%u: the OCSP response in %s holds no basic response", l->host, l->port, l->ocsp_file);
    } else {
        X509 *leaf = SSL_CTX_get0_certificate(ctx);
        const ASN1_INTEGER *serial = leaf != NULL ? X509_get0_serialNumber(leaf) : NULL;
        int found = 0;
        for (int i = 0; i < OCSP_resp_count(bs); i++) {
            OCSP_SINGLERESP *single = OCSP_resp_get0(bs, i);
            ASN1_INTEGER *id_serial = NULL;
            ASN1_GENERALIZEDTIME *this_upd = NULL, *next_upd = NULL, *rev = NULL;
            int reason;
            if (serial == NULL ||
                OCSP_id_get0_info(NULL, NULL, NULL, &id_serial, (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(single)) != 1 ||
                ASN1_INTEGER_cmp(id_serial, serial) != 0)
                continue;
            found = 1;
            int cs = OCSP_single_get0_status(single, &reason, &rev, &this_upd, &next_upd);
            if (cs != V_OCSP_CERTSTATUS_GOOD)
                est_log_warn("listen %s:%u: the OCSP response in %s says the certificate is \"%s\"", l->host, l->port, l->ocsp_file,
                             OCSP_cert_status_str(cs));
            if (next_upd != NULL && X509_cmp_current_time(next_upd) <= 0)
                est_log_warn("listen %s:%u: the OCSP response in %s has expired (nextUpdate passed); clients will ignore "
                             "it until the file is renewed and estuary reloaded",
                             l->host, l->port, l->ocsp_file);
        }
        if (!found)
            est_log_warn("listen %s:%u: the OCSP response in %s does not cover the serial number of %s", l->host, l->port,
                         l->ocsp_file, l->certificate_file);
    }
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    ERR_clear_error();
    return 0;
}

static int setup_ocsp(const est_listen_conf_t *l, SSL_CTX *ctx)
{
    char err[256];
    ocsp_blob_t *b = read_ocsp_file(l->ocsp_file, err, sizeof(err));
    if (b == NULL) {
        est_log_error("listen %s:%u: cannot read the OCSP response %s: %s", l->host, l->port, l->ocsp_file, err);
        return -1;
    }
    if (check_ocsp(l, ctx, b) != 0 || SSL_CTX_set_ex_data(ctx, ocsp_ex_index, b) != 1) {
        free(b);
        return -1;
    }
    /* from here the SSL_CTX owns b */
    SSL_CTX_set_tlsext_status_cb(ctx, ocsp_status_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, b);
    return 0;
}

SSL_CTX *est_tls_server_ctx_create(const est_listen_conf_t *l)
{
    char buf[256];
    pthread_once(&tls_once, tls_init_once);
    if (tls_init_result != 0) {
        est_log_error("listen %s:%u: cannot set up the TLS session ticket keys: %s", l->host, l->port, ssl_error(buf, sizeof(buf)));
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        est_log_error("listen %s:%u: cannot create an SSL_CTX: %s", l->host, l->port, ssl_error(buf, sizeof(buf)));
        return NULL;
    }
    const char *ciphers = l->tls_ciphers != NULL ? l->tls_ciphers : EST_TLS_DEFAULT_CIPHERS;
    int min_version = l->tls_min_version != 0 ? l->tls_min_version : TLS1_2_VERSION;
    const char *what;
    if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1) {
        what = "the minimum TLS version";
        goto Error;
    }
    /* no compression (CRIME), no renegotiation, the server's order of suites (and groups) */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) { /* TLS 1.3 suites: OpenSSL's, all AEAD */
        what = "the cipher list";
        goto Error;
    }
    if (SSL_CTX_set1_groups_list(ctx, EST_TLS_GROUPS) != 1) {
        what = "the key exchange groups";
        goto Error;
    }
    /* resumption is by tickets only: no per-process session cache to fill or to share */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, EST_TLS_TICKET_LIFETIME_S);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) != 1) {
        what = "the session ticket callback";
        goto Error;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, l->certificate_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, l->key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        est_log_error("listen %s:%u: cannot load certificate %s / key %s: %s", l->host, l->port, l->certificate_file, l->key_file,
                      ssl_error(buf, sizeof(buf)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (l->ocsp_file != NULL && setup_ocsp(l, ctx) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_alpn_protocols);
    return ctx;
Error:
    est_log_error("listen %s:%u: cannot set %s: %s", l->host, l->port, what, ssl_error(buf, sizeof(buf)));
    SSL_CTX_free(ctx);
    return NULL;
}
