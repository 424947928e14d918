/*
 * estuary - the TLS policy of the listeners (SPEC "Access control and traffic policy"):
 * the SSL_CTX of a TLS listener, the session ticket keys and OCSP stapling. docs/tls.md
 * describes the defaults and the design.
 *
 * - Protocols TLS 1.2 and 1.3 ("tls.min_version": "1.3" drops 1.2); TLS 1.2 suites are
 *   forward-secret AEAD only unless "tls.ciphers" overrides them; TLS 1.3 keeps OpenSSL's
 *   suites (all AEAD). The server's order wins; groups X25519, P-256, P-384.
 * - Resumption by session tickets only (no server-side session cache). The ticket keys are
 *   process-wide, shared by every listener and every generation, so a reload keeps
 *   resumption working; they rotate (est_ticket_ring_t below).
 * - OCSP stapling: the DER response in "tls.ocsp_file" is read when the generation is built
 *   (main thread) and stapled when a client sends status_request (RFC 6066 section 8).
 */
#ifndef EST_SERVER_TLS_H
#define EST_SERVER_TLS_H

#include <pthread.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include "config/config.h"

/* the TLS 1.2 cipher list without "tls.ciphers": ECDHE key exchange (forward secrecy) with
 * AEAD ciphers only (no static RSA key exchange, no CBC, no SHA-1 MACs) */
#define EST_TLS_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"
/* key exchange groups, preferred first */
#define EST_TLS_GROUPS "X25519:P-256:P-384"
/* a new ticket key every hour; the retired ones still decrypt for two more rotations */
#define EST_TLS_TICKET_ROTATE_S 3600
#define EST_TLS_TICKET_KEEP_OLD 2
/* the ticket lifetime announced to clients (and the session timeout): one rotation, so a
 * ticket is always decryptable while it is valid */
#define EST_TLS_TICKET_LIFETIME_S EST_TLS_TICKET_ROTATE_S
/* an OCSP response larger than this is refused (real ones are a few KB) */
#define EST_TLS_OCSP_MAX_BYTES (1024 * 1024)

/*
 * The SSL_CTX of TLS listener `l` (certificate, key, protocol and cipher policy, tickets,
 * OCSP response read now). Main thread. NULL on failure, with the reason logged.
 */
SSL_CTX *est_tls_server_ctx_create(const est_listen_conf_t *l);

/* ---- session ticket keys ---------------------------------------------------------------- */

#define EST_TICKET_NAME_LEN 16
#define EST_TICKET_KEYS_MAX 8

typedef struct est_ticket_key {
    unsigned char name[EST_TICKET_NAME_LEN]; /* sent in the ticket (RFC 5077 section 4 key_name) */
    unsigned char aes_key[32];               /* AES-256-CBC */
    unsigned char hmac_key[32];              /* HMAC-SHA256 */
} est_ticket_key_t;

/*
 * A ring of ticket keys: keys[0] encrypts new tickets, keys[1..n-1] (the previous ones,
 * newest first) still decrypt. est_ticket_ring_advance rotates once per `interval_s` elapsed
 * since the current key was made and drops keys retired more than `keep_old` rotations ago.
 * Times are seconds on any monotonic clock (passed in, so tests can drive them).
 *
 * Thread safety: the ticket callback runs on the worker threads (each handshake), the
 * rotation happens lazily inside that callback on whichever worker sees it due. A rwlock
 * guards the ring: handshakes take it shared just long enough to copy one key out (a few
 * hundred bytes), and the rare rotation (once an hour) takes it exclusive. An RCU-style
 * pointer swap would need a grace period to free the old ring; the lock is simpler and its
 * read side is uncontended in practice.
 */
typedef struct est_ticket_ring {
    pthread_rwlock_t lock;
    unsigned interval_s, keep_old;
    uint64_t current_since; /* when keys[0] started encrypting */
    size_t num_keys;
    est_ticket_key_t keys[EST_TICKET_KEYS_MAX];
} est_ticket_ring_t;

/* a ring with one fresh key made at `now`; keep_old < EST_TICKET_KEYS_MAX. 0 or -1 (RAND failed) */
int est_ticket_ring_init(est_ticket_ring_t *r, unsigned interval_s, unsigned keep_old, uint64_t now);
/* wipes the keys */
void est_ticket_ring_dispose(est_ticket_ring_t *r);
/* copies the key that encrypts at `now` to *out (rotating first when due). 0 or -1 */
int est_ticket_ring_encrypt_key(est_ticket_ring_t *r, uint64_t now, est_ticket_key_t *out);
/* copies the key named `name` to *out: 1 found and current, 2 found but retired (the ticket
 * should be renewed), 0 unknown (or dropped) */
int est_ticket_ring_decrypt_key(est_ticket_ring_t *r, uint64_t now, const unsigned char *name, est_ticket_key_t *out);

#endif
