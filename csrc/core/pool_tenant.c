/*
** pool_tenant.c -- a pool's tenants and quotas: the count of queued and
** running ops per tenant, the quota each tenant has, and how a
** submission finds its tenant (given, or a value of its context).
**
** Locks: everything here runs under the pool's 'mu', taken by the
** caller; nothing takes a lock of its own (tt__pool_tenant_of reads a context's
** values, which takes no pool lock).
*/
#include <string.h>

#include "pool_int.h"


/* {====================================================================
** Tenants and quotas (all under 'mu')
** ===================================================================== */

static unsigned tenant_hash(const char *s, size_t n) {
  unsigned h = 2166136261u;
  size_t i;
  for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h % TENANT_BUCKETS;
}

/* Tenant names are byte strings compared whole: 'len' bytes at 's' (NULs
** included).  The quota bucket of an op is its tenant, or "default"
** without one. */
static const char *quota_key(const char *tenant, size_t *len) {
  if (tenant == NULL) {
    *len = 7;
    return "default";
  }
  return tenant;
}

static bool same_name(const char *a, size_t alen, const char *b,
                      size_t blen) {
  return alen == blen && memcmp(a, b, alen) == 0;
}

static tenant_ent *tenant_find(tt_pool *p, const char *name, size_t len) {
  tenant_ent *t;
  for (t = p->tenants[tenant_hash(name, len)]; t != NULL; t = t->next)
    if (same_name(t->name, t->len, name, len)) return t;
  return NULL;
}

/* tt__pool_quota_limit is the quota of tenant 'name' ('len' bytes). */
int tt__pool_quota_limit(tt_pool *p, const char *name, size_t len) {
  int i;
  for (i = 0; i < p->nquotas; i++)
    if (same_name(p->quotas[i].tenant, strlen(p->quotas[i].tenant), name,
                  len))
      return p->quotas[i].limit;
  return p->quota_default;
}

/* tt__pool_tenant_inc counts one more op of tenant 'tname' ('tlen'
** bytes; NULL: none); false when out of memory. */
bool tt__pool_tenant_inc(tt_pool *p, const char *tname, size_t tlen) {
  size_t len = tlen;
  const char *key = quota_key(tname, &len);
  tenant_ent *t;
  if (!p->quotas_on) return true;
  t = tenant_find(p, key, len);
  if (t == NULL) {
    unsigned b = tenant_hash(key, len);
    t = malloc(sizeof *t + len + 1);
    if (t == NULL) return false;
    memcpy(t->name, key, len);
    t->name[len] = '\0';
    t->len = len;
    t->count = 0;
    t->next = p->tenants[b];
    p->tenants[b] = t;
  }
  t->count++;
  return true;
}

/* tt__pool_tenant_dec counts one op of tenant 'tname' less. */
void tt__pool_tenant_dec(tt_pool *p, const char *tname, size_t tlen) {
  size_t len = tlen;
  const char *key = quota_key(tname, &len);
  tenant_ent **pt;
  if (!p->quotas_on) return;
  for (pt = &p->tenants[tenant_hash(key, len)]; *pt != NULL;
       pt = &(*pt)->next) {
    tenant_ent *t = *pt;
    if (same_name(t->name, t->len, key, len)) {
      if (--t->count == 0) {
        *pt = t->next;
        free(t);
      }
      return;
    }
  }
}

/* tt__pool_tenant_of finds the tenant of 'parent' for a pool that looks
** it up itself: NULL if the pool has no tenant key or the context no such
** value.  A tt_bytes value gives its bytes, whole ('*hold' keeps the
** value alive for the caller to release); any other object its
** description, written into 'buf'. */
const char *tt__pool_tenant_of(tt_pool *p, tt_ctx *parent, char *buf,
                               size_t n, size_t *len, tt_obj **hold) {
  tt_obj *v = NULL;
  *hold = NULL;
  *len = 0;
  if (!p->has_tenant_key) return NULL;
  if (!tt_ctx_value(parent, &p->tenant_key, &v) || v == NULL) return NULL;
  if (v->type == &tt_bytes_type) {
    *hold = v;
    *len = ((tt_bytes *)v)->len;
    return ((tt_bytes *)v)->data;
  }
  if (tt_describe(v, buf, n) < 0) buf[0] = '\0';
  tt_unref(v);
  *len = strlen(buf);
  return buf;
}

/* tt__pool_quota_ok tells under 'mu' whether the quota bucket of 'tenant'
** ('tenant_len' bytes; NULL: no tenant) has room. */
bool tt__pool_quota_ok(tt_pool *p, const char *tenant, size_t tenant_len) {
  if (p->quotas_on) {
    size_t len = tenant_len;
    const char *qkey = quota_key(tenant, &len);
    int limit = tt__pool_quota_limit(p, qkey, len);
    tenant_ent *t = tenant_find(p, qkey, len);
    if (limit > 0 && t != NULL && t->count >= limit) return false;
  }
  return true;
}

/* }==================================================================== */
