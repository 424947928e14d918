/*
 * estuary - the hosts file, read once when a resolver is created (see dns_cache.h).
 *
 * Format (hosts(5)): one "ADDRESS CANONICAL_NAME [ALIASES...]" per line, fields separated by
 * blanks, '#' starts a comment. Like glibc's getaddrinfo, every line listing a name
 * contributes its address. IPv6 addresses with a zone ("fe80::1%eth0") are skipped.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/log.h"
#include "upstream/dns_cache.h"

#define HOSTS_FILE_MAX (16 * 1024 * 1024)

/* Adds `addr` to the entry for `name`, creating it; grows its result by one slot. */
static int add_host(est_dns_cache_t *table, const char *name, const est_dns_addr_t *addr)
{
    est_dns_entry_t *e = est_dns_cache_find(table, name);
    if (e == NULL) {
        if ((e = est_dns_cache_insert(table, name)) == NULL)
            return -1;
        e->permanent = 1;
        e->expires_at = UINT64_MAX;
        e->stale_until = UINT64_MAX;
    }
    size_t n = e->result != NULL ? e->result->num_addrs : 0;
    est_dns_result_t *r = realloc(e->result, offsetof(est_dns_result_t, addrs) + (n + 1) * sizeof(est_dns_addr_t));
    if (r == NULL)
        return -1;
    if (e->result == NULL) {
        r->refcnt = 1;
        r->generation = 0;
        r->num_addrs = 0;
    }
    e->result = r;
    est_dns_result_add(r, (const struct sockaddr *)&addr->sa, addr->len);
    return 0;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Handles one line (without its newline). Returns 0, or -1 on ENOMEM. */
static int parse_line(est_dns_cache_t *table, const char *line, size_t len)
{
    char field[EST_DNS_NAME_MAX + 2];
    est_dns_addr_t addr;
    int have_addr = 0;
    size_t i = 0;

    while (i < len) {
        while (i < len && is_blank(line[i]))
            ++i;
        if (i == len || line[i] == '#')
            break;
        size_t start = i;
        while (i < len && !is_blank(line[i]) && line[i] != '#')
            ++i;
        size_t flen = i - start;
        if (flen >= sizeof(field)) {
            if (!have_addr)
                return 0; /* garbage address: skip the line */
            continue;     /* over-long name: skip it */
        }
        memcpy(field, line + start, flen);
        field[flen] = '\0';
        if (!have_addr) {
            if (strchr(field, '[') != NULL || est_dns_parse_literal(field, &addr) != 0)
                return 0;
            have_addr = 1;
        } else if (est_dns_name_is_valid(field)) {
            est_dns_addr_t unused;
            if (est_dns_parse_literal(field, &unused) == 0)
                continue; /* an address is not a name */
            if (add_host(table, field, &addr) != 0)
                return -1;
        }
    }
    return 0;
}

static int ensure_localhost(est_dns_cache_t *table)
{
    est_dns_addr_t lo;
    est_dns_parse_literal("127.0.0.1", &lo);
    return add_host(table, "localhost", &lo); /* no-op when listed; sorted IPv4 first below */
}

int est_dns_hosts_parse(est_dns_cache_t *table, const char *text, size_t len, uint64_t *next_generation)
{
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - text) : len;
        if (parse_line(table, text + pos, end - pos) != 0)
            return -1;
        pos = end + 1;
    }
    if (ensure_localhost(table) != 0)
        return -1;
    for (h2o_linklist_t *n = table->lru.next; n != &table->lru; n = n->next) {
        est_dns_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_dns_entry_t, lru, n);
        est_dns_result_sort(e->result);
        e->result->generation = (*next_generation)++;
    }
    return 0;
}

int est_dns_hosts_load(est_dns_cache_t *table, const char *path, uint64_t *next_generation)
{
    FILE *fp = fopen(path, "re");
    char *text = NULL;
    size_t len = 0;
    int ret;

    if (fp == NULL) {
        est_log_warn("dns: cannot read hosts file %s: %s", path, strerror(errno));
    } else {
        size_t cap = 0;
        for (;;) {
            if (len == cap) {
                if (cap == HOSTS_FILE_MAX) {
                    est_log_warn("dns: hosts file %s is larger than %d bytes; the rest is ignored", path, HOSTS_FILE_MAX);
                    break;
                }
                cap = cap == 0 ? 64 * 1024 : cap * 2;
                char *t = realloc(text, cap);
                if (t == NULL) {
                    free(text);
                    fclose(fp);
                    return -1;
                }
                text = t;
            }
            size_t got = fread(text + len, 1, cap - len, fp);
            len += got;
            if (got == 0)
                break;
        }
        if (ferror(fp))
            est_log_warn("dns: error reading hosts file %s", path);
        fclose(fp);
    }
    ret = est_dns_hosts_parse(table, text != NULL ? text : "", len, next_generation);
    free(text);
    return ret;
}
