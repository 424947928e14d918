/*
 * estuary - request coalescing; see coalesce.h.
 */
#include "cache/coalesce.h"

#include <stdlib.h>
#include <string.h>

#include "cache/hash.h"

const char est_coalesce_err_unshareable[] = "reply not shareable";
const char est_coalesce_err_promoted[] = "promoted to leader";
const char est_coalesce_err_shutdown[] = "coalescing table destroyed";

#define BUCKETS_MIN 16

struct est_coalesce_flight_t {
    est_coalesce_t *table; /* NULL once out of the table (done) */
    est_coalesce_flight_t *next;
    est_coalesce_waiter_t *head, *tail;
    size_t nwaiters;
    uint64_t hash;
    size_t key_len;
    char key[];
};

struct est_coalesce_t {
    est_cache_hash_key_t hkey;
    size_t max_waiters;
    est_coalesce_flight_t **buckets;
    size_t nbuckets, count;
};

est_coalesce_t *est_coalesce_create(size_t max_waiters)
{
    est_coalesce_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if ((c->buckets = calloc(BUCKETS_MIN, sizeof(*c->buckets))) == NULL) {
        free(c);
        return NULL;
    }
    c->nbuckets = BUCKETS_MIN;
    c->max_waiters = max_waiters != 0 ? max_waiters : EST_COALESCE_MAX_WAITERS;
    est_cache_hash_key_init(&c->hkey);
    return c;
}

static void table_remove(est_coalesce_flight_t *f)
{
    est_coalesce_t *c = f->table;
    if (c == NULL)
        return;
    est_coalesce_flight_t **pp = &c->buckets[f->hash & (c->nbuckets - 1)];
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    --c->count;
    f->table = NULL;
}

static est_coalesce_waiter_t *pop_waiter(est_coalesce_flight_t *f)
{
    est_coalesce_waiter_t *w = f->head;
    if (w == NULL)
        return NULL;
    f->head = w->_next;
    if (f->head != NULL)
        f->head->_prev = NULL;
    else
        f->tail = NULL;
    --f->nwaiters;
    w->_flight = NULL;
    w->_prev = w->_next = NULL;
    return w;
}

void est_coalesce_destroy(est_coalesce_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; ++i) {
        while (c->buckets[i] != NULL) {
            est_coalesce_flight_t *f = c->buckets[i];
            table_remove(f);
            est_coalesce_waiter_t *w;
            while ((w = pop_waiter(f)) != NULL)
                w->cb(w, NULL, est_coalesce_err_shutdown);
            free(f);
        }
    }
    free(c->buckets);
    free(c);
}

static void grow(est_coalesce_t *c)
{
    size_t n = c->nbuckets * 2;
    est_coalesce_flight_t **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; ++i) {
        est_coalesce_flight_t *f = c->buckets[i];
        while (f != NULL) {
            est_coalesce_flight_t *next = f->next;
            f->next = nb[f->hash & (n - 1)];
            nb[f->hash & (n - 1)] = f;
            f = next;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->nbuckets = n;
}

est_coalesce_role_t est_coalesce_join(est_coalesce_t *c, const char *key, size_t key_len, est_coalesce_waiter_t *w,
                                      est_coalesce_flight_t **flight)
{
    if (key_len > EST_CACHE_MAX_KEY)
        return EST_COALESCE_ALONE;
    uint64_t h = est_cache_hash(&c->hkey, key, key_len);
    est_coalesce_flight_t *f;
    for (f = c->buckets[h & (c->nbuckets - 1)]; f != NULL; f = f->next)
        if (f->hash == h && f->key_len == key_len && memcmp(f->key, key, key_len) == 0)
            break;
    if (f != NULL) {
        if (f->nwaiters >= c->max_waiters)
            return EST_COALESCE_ALONE;
        w->promoted = NULL;
        w->_flight = f;
        w->_next = NULL;
        w->_prev = f->tail;
        if (f->tail != NULL)
            f->tail->_next = w;
        else
            f->head = w;
        f->tail = w;
        ++f->nwaiters;
        return EST_COALESCE_WAITER;
    }
    if ((f = calloc(1, sizeof(*f) + key_len + 1)) == NULL)
        return EST_COALESCE_ALONE;
    if (key_len != 0)
        memcpy(f->key, key, key_len);
    f->key_len = key_len;
    f->hash = h;
    f->table = c;
    est_coalesce_flight_t **b = &c->buckets[h & (c->nbuckets - 1)];
    f->next = *b;
    *b = f;
    if (++c->count > c->nbuckets)
        grow(c);
    *flight = f;
    return EST_COALESCE_LEADER;
}

void est_coalesce_leave(est_coalesce_waiter_t *w)
{
    est_coalesce_flight_t *f = w->_flight;
    if (f == NULL)
        return;
    if (w->_prev != NULL)
        w->_prev->_next = w->_next;
    else
        f->head = w->_next;
    if (w->_next != NULL)
        w->_next->_prev = w->_prev;
    else
        f->tail = w->_prev;
    --f->nwaiters;
    w->_flight = NULL;
    w->_prev = w->_next = NULL;
}

void est_coalesce_done(est_coalesce_flight_t *f, est_cache_entry_t *reply, const char *errstr)
{
    table_remove(f);
    if (reply != NULL) {
        est_cache_entry_freeze(reply);
        errstr = NULL;
    } else if (errstr == NULL) {
        errstr = est_coalesce_err_unshareable;
    }
    /* one at a time off the list, so that a callback may leave any other waiter safely */
    est_coalesce_waiter_t *w;
    while ((w = pop_waiter(f)) != NULL) {
        if (reply != NULL)
            est_cache_entry_addref(reply);
        w->cb(w, reply, errstr);
    }
    free(f);
}

void est_coalesce_abandon(est_coalesce_flight_t *f)
{
    est_coalesce_waiter_t *w = pop_waiter(f);
    if (w == NULL) {
        table_remove(f);
        free(f);
        return;
    }
    /* the flight stays in the table with its other waiters; f is not touched after the call */
    w->promoted = f;
    w->cb(w, NULL, est_coalesce_err_promoted);
}

size_t est_coalesce_waiters(const est_coalesce_flight_t *f)
{
    return f->nwaiters;
}

size_t est_coalesce_size(const est_coalesce_t *c)
{
    return c->count;
}
