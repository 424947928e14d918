/*
 * estuary - HTTP caching rules for a shared cache, as pure functions over header values and
 * times: Cache-Control (RFC 9111 5.2, RFC 5861), Expires / Date (RFC 9110 5.6.7), Age
 * (RFC 9111 5.1), whether a reply may be stored and for how long (RFC 9111 3, 4.2), whether a
 * stored reply may answer a request (RFC 9111 4.2, 4.2.4, RFC 5861), and the Cache-Status
 * (RFC 9211) and Age fields estuary sends. libc and common/fieldvalue.h (list elements) only,
 * no allocation, no global state.
 *
 * Units: times are int64 milliseconds since the Unix epoch (wall clock), durations are int64
 * milliseconds; header values in seconds are converted on the way in and out. Every number
 * read from a header is clamped to 2^31 seconds (RFC 9111 1.2.2), so no sum here overflows.
 *
 * Where SPEC and the RFCs leave a choice, the choice is documented at the function and in
 * docs/cache.md (Set-Cookie, no heuristic freshness, conflicting duplicates, no revalidation).
 */
#ifndef EST_CACHE_CCONTROL_H
#define EST_CACHE_CCONTROL_H

#include <stddef.h>
#include <stdint.h>

/* the largest delta-seconds kept (RFC 9111 1.2.2: "2147483648 (2^31)") */
#define EST_CC_DELTA_MAX INT64_C(2147483648)
/* a delta-seconds directive's value when absent, or present but not 1*DIGIT */
#define EST_CC_ABSENT INT64_C(-1)
#define EST_CC_INVALID INT64_C(-2)

/* flag directives (request and response share the bit space; each side reads its own) */
enum {
    EST_CC_NO_STORE = 1 << 0,
    EST_CC_NO_CACHE = 1 << 1, /* with or without a field list: any no-cache is the whole reply */
    EST_CC_PRIVATE = 1 << 2,  /* with or without a field list, likewise */
    EST_CC_PUBLIC = 1 << 3,
    EST_CC_MUST_REVALIDATE = 1 << 4,
    EST_CC_PROXY_REVALIDATE = 1 << 5,
    EST_CC_ONLY_IF_CACHED = 1 << 6,
    EST_CC_MAX_STALE_ANY = 1 << 7, /* request max-stale without a value */
};

/*
 * One message's Cache-Control, merged over all its field lines. Numeric directives hold
 * seconds (0..EST_CC_DELTA_MAX), EST_CC_ABSENT or EST_CC_INVALID (a missing, signed, non-digit
 * or garbage-followed argument). A directive repeated with different values keeps the most
 * restrictive one (RFC 9111 4.2.1: "the most restrictive directive should be honored"): the
 * smallest max-age / s-maxage / stale-* / max-stale, the largest min-fresh; an invalid copy
 * makes the directive invalid. Unknown directives are ignored (RFC 9111 5.2.3).
 */
typedef struct {
    unsigned flags;
    int64_t max_age;
    int64_t s_maxage;
    int64_t stale_while_revalidate;
    int64_t stale_if_error;
    int64_t max_stale; /* request */
    int64_t min_fresh; /* request */
} est_cc_t;

void est_cc_init(est_cc_t *cc);
/*
 * Parses one Cache-Control field line into `cc` (call once per line, in order). Tolerates
 * OWS anywhere between elements and around '=', any case in names, empty list elements,
 * quoted-string arguments (RFC 9111 5.2: "recipients ought to accept both forms") with
 * backslash escapes, and any number of directives (linear time, nothing stored per directive).
 */
void est_cc_parse(est_cc_t *cc, const char *v, size_t len);

/*
 * HTTP-date (RFC 9110 5.6.7): IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") and the two
 * obsolete forms recipients must accept: rfc850-date ("Sunday, 06-Nov-94 08:49:37 GMT", its
 * two-digit year read as the most recent year with those digits that is not more than 50 years
 * after `now_s`) and asctime ("Sun Nov  6 08:49:37 1994"). Surrounding OWS is skipped; names
 * are compared case-insensitively; the fields are range-checked (Feb 30 is refused; second 60
 * is accepted, as the grammar allows). 0 with *out_s (seconds since the epoch), or -1.
 */
int est_http_date_parse(const char *v, size_t len, int64_t now_s, int64_t *out_s);

/*
 * Age (RFC 9111 5.1): the first member of a list, delta-seconds clamped to 2^31. 0 with
 * *out_s, or -1 when that member is not 1*DIGIT (the caller then ignores the field).
 */
int est_cache_age_parse(const char *v, size_t len, int64_t *out_s);

/* the most Vary field names a reply may list and still be stored */
#define EST_CACHE_MAX_VARY 16

typedef struct {
    const char *base;
    size_t len;
} est_cache_span_t;

/*
 * What the caching rules need from a backend reply's header. Fill with init, then add every
 * header line (any name: the ones not listed here are ignored). Vary names are BORROWED from
 * the values given to add (keep those alive while the facts are used).
 */
typedef struct {
    est_cc_t cc;
    int has_cc;
    int has_date;
    int64_t date_s;    /* the first valid Date; an invalid one is ignored (the receive time stands in) */
    int expires_state; /* 0 absent, 1 valid, -1 invalid or repeated (RFC 9111 5.3: already expired) */
    int64_t expires_s;
    int has_age;
    int64_t age_s; /* the first Age line's value */
    int _age_seen;
    int set_cookie;
    int vary_star;     /* Vary: * (never stored, RFC 9111 4.1) */
    int vary_overflow; /* more than EST_CACHE_MAX_VARY distinct names, or a name that is not a token */
    size_t num_vary;   /* distinct names, lower-case compared */
    est_cache_span_t vary[EST_CACHE_MAX_VARY];
} est_cache_resp_facts_t;

void est_cache_resp_facts_init(est_cache_resp_facts_t *f);
/* `now_s` only resolves rfc850-date years */
void est_cache_resp_facts_add(est_cache_resp_facts_t *f, const char *name, size_t name_len, const char *value, size_t value_len,
                              int64_t now_s);

/* What the caching rules need from the client's request. Fill with init, then add each line. */
typedef struct {
    int is_get, is_head;
    int authorization, cookie, range;
    int has_cc;
    int pragma_no_cache; /* Pragma: no-cache, honoured only without Cache-Control (RFC 9111 5.4) */
    est_cc_t cc;
} est_cache_req_facts_t;

void est_cache_req_facts_init(est_cache_req_facts_t *f, const char *method, size_t method_len);
void est_cache_req_facts_add(est_cache_req_facts_t *f, const char *name, size_t name_len, const char *value, size_t value_len);

/* A route's `cache` object and the process-wide limit, as the decision functions read them. */
typedef struct {
    int64_t ttl_ms; /* freshness when the backend says nothing; 0: such replies are not stored */
    int64_t stale_while_revalidate_ms;
    int64_t stale_if_error_ms;
    int shared;       /* "shared": true: Authorization / Cookie requests use the cache */
    size_t max_entry; /* bytes; a reply known to be larger is not stored (0: no limit here) */
} est_cache_route_policy_t;

/* RFC 9211 fwd values estuary uses (EST_CACHE_FWD_NONE: not forwarded, a hit) */
typedef enum {
    EST_CACHE_FWD_NONE = 0,
    EST_CACHE_FWD_BYPASS,   /* the cache was not used for this request */
    EST_CACHE_FWD_METHOD,   /* the method is not cacheable */
    EST_CACHE_FWD_URI_MISS, /* nothing stored under this key */
    EST_CACHE_FWD_VARY_MISS,
    EST_CACHE_FWD_MISS,    /* generic miss */
    EST_CACHE_FWD_REQUEST, /* request directives forbade a stored reply */
    EST_CACHE_FWD_STALE,   /* a stale stored reply (served under stale-while-revalidate, or refreshed) */
} est_cache_fwd_t;

typedef enum {
    EST_CACHE_REQ_LOOKUP,  /* look up; store the backend's reply if storable */
    EST_CACHE_REQ_FORWARD, /* do not answer from the cache, but the reply may be stored (no-cache) */
    EST_CACHE_REQ_BYPASS,  /* neither look up nor store */
} est_cache_req_action_t;

/*
 * The request side, before any lookup. BYPASS: not GET/HEAD (*fwd = METHOD); Authorization or
 * Cookie on a route that is not shared (SPEC; *detail "authorization" / "cookie"); request
 * no-store (RFC 9111 5.2.1.5: nothing of this exchange may be stored); Range (ranges are not
 * cached: the whole reply would be stored under the key of a part). FORWARD (*fwd = REQUEST):
 * no-cache, or Pragma: no-cache without Cache-Control. Else LOOKUP. *detail is an sf-token or
 * NULL.
 */
est_cache_req_action_t est_cache_request_action(const est_cache_req_facts_t *rq, const est_cache_route_policy_t *rp,
                                                est_cache_fwd_t *fwd, const char **detail);

typedef struct {
    int storable;
    const char *detail;  /* when not storable: why, an sf-token for Cache-Status detail= */
    int64_t lifetime_ms; /* freshness lifetime (RFC 9111 4.2.1) */
    int64_t stale_while_revalidate_ms;
    int64_t stale_if_error_ms;
} est_cache_decision_t;

/*
 * May this reply be stored, and how fresh is it. `content_length` is the reply's body size
 * when known, or -1. `response_time_ms` is when the reply head arrived (stands in for a missing
 * Date). Not storable ("detail"): a method other than GET/HEAD ("method"); a status outside
 * 2xx (except 206), 301 and 404 ("status"); no-store, private, no-cache ("no-store", "private",
 * "no-cache": no-cache needs revalidation, which estuary does not do); Authorization or Cookie
 * as below ("authorization", "cookie"); Set-Cookie ("set-cookie": a shared cache would hand one
 * client's cookie to others); Vary: * or too many Vary names ("vary"); a body over max_entry ("too-large");
 * no freshness at all and no stale allowance ("no-freshness": no heuristic freshness).
 *
 * Authorization (RFC 9111 3.5): storable when the route is `shared` or the reply has public,
 * s-maxage or must-revalidate. Cookie: storable only on a `shared` route (SPEC).
 *
 * Lifetime: s-maxage, else max-age, else Expires - Date, else the route's ttl; an invalid
 * max-age / s-maxage or Expires makes the lifetime 0 (stale at once, RFC 9111 4.2.1, 5.3).
 * Stale allowances: the backend's stale-while-revalidate / stale-if-error when it sends them,
 * else the route's; none at all with must-revalidate or proxy-revalidate, and only the backend's
 * own with s-maxage, which implies proxy-revalidate (RFC 9111 4.2.4, 5.2.2.10).
 */
void est_cache_decide(const est_cache_req_facts_t *rq, int status, const est_cache_resp_facts_t *rs,
                      const est_cache_route_policy_t *rp, int64_t content_length, int64_t response_time_ms,
                      est_cache_decision_t *out);

/* The inputs of a stored reply's age (RFC 9111 4.2.3), all in ms since the epoch / ms. */
typedef struct {
    int64_t date_ms;          /* the reply's Date, or response_time_ms without one */
    int64_t age_ms;           /* the reply's Age, 0 without one */
    int64_t request_time_ms;  /* when the request was sent to the backend */
    int64_t response_time_ms; /* when the reply head arrived */
} est_cache_age_facts_t;

/* fills `a` from a reply's facts */
void est_cache_age_facts_set(est_cache_age_facts_t *a, const est_cache_resp_facts_t *rs, int64_t request_time_ms,
                             int64_t response_time_ms);

/*
 * current_age (RFC 9111 4.2.3). The apparent age compares Date with the receive time at Date's
 * own one-second resolution (a reply received 700 ms into the second its Date names is 0 s
 * old, not 0.7 s), so a route ttl of 1 s is not cut short by rounding. Never negative.
 */
int64_t est_cache_current_age(const est_cache_age_facts_t *a, int64_t now_ms);

typedef enum {
    EST_CACHE_FRESH,            /* serve it: hit */
    EST_CACHE_STALE_REVALIDATE, /* serve it, and refresh it in the background (one refresh) */
    EST_CACHE_STALE_IF_ERROR,   /* forward; serve it only if the backend fails */
    EST_CACHE_UNUSABLE,         /* forward; it cannot answer this request */
} est_cache_use_t;

/*
 * Whether a stored reply of `age_ms`, `lifetime_ms` and stale allowances may answer a request
 * with directives `req` (NULL: none). Fresh when lifetime > age (RFC 9111 4.2) and the
 * request's max-age / min-fresh allow it; a request max-age it exceeds makes it UNUSABLE (no
 * stale serving either: the client asked for a newer one). Then stale-while-revalidate
 * (age < lifetime + swr), then stale-if-error (age < lifetime + sie, counted from expiry,
 * RFC 5861 4). A request's max-stale is parsed but not used: estuary serves stale replies only
 * within the backend's / route's own allowances.
 */
est_cache_use_t est_cache_usable(int64_t age_ms, int64_t lifetime_ms, int64_t swr_ms, int64_t sie_ms, const est_cc_t *req);

/* One Cache-Status member (RFC 9211 2) for cache "estuary". */
typedef struct {
    int hit;
    est_cache_fwd_t fwd;
    int fwd_status; /* the backend's status when forwarded, 0 to leave out */
    int stored;
    int collapsed; /* answered by another request's backend exchange (coalescing) */
    int has_ttl;
    int64_t ttl_ms;     /* remaining freshness (negative when stale), sent in whole seconds */
    const char *detail; /* NULL, or sent as an sf-token when it is one, else as an sf-string */
} est_cache_status_t;

/* the longest Cache-Status value est_cache_status_format writes, with a detail of at most 64 bytes */
#define EST_CACHE_STATUS_MAX 256

/*
 * Writes the Cache-Status value ("estuary; hit", "estuary; fwd=miss; stored", ...) into buf
 * (not NUL-terminated); returns its length, or 0 when it does not fit in `cap`. A detail over
 * 64 bytes is cut to 64.
 */
size_t est_cache_status_format(char *buf, size_t cap, const est_cache_status_t *s);

/* Writes the Age value (whole seconds, clamped to 2^31) of `age_ms`; returns its length (<= 10), or 0 if cap < 11 */
size_t est_cache_age_format(char *buf, size_t cap, int64_t age_ms);

#endif
