/* The balancer interface and what every policy shares.
 *
 * balancer_pick notices a new set by its version, recomputes the effective weights (each
 * endpoint's weight scaled by its slow-start ramp), lets the policy rebuild its state and
 * then asks the policy. The policies live in balancer_<policy>.c; hash tables are built in
 * the group, under its mutex, by the first worker that meets a set with new endpoints, and
 * every other worker takes a reference to the same immutable table. */
#include "core/log.h"
#include "core/random.h"
#include "core/time.h"
#include "proxy/balancer_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* While some endpoint ramps, weights are recomputed this often (a fraction of the window,
 * within these bounds), not on every pick. */
#define RAMP_STEPS 100u
#define RAMP_STEP_MIN_US 1000u
#define RAMP_STEP_MAX_US 1000000u

/* ---- hashing and random numbers ------------------------------------------------------ */

uint64_t lb_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* MurmurHash64A (Austin Appleby, public domain): fast, well spread, and the same on every
 * host, which matters because every sidecar must map a key to the same endpoint. Bytes
 * are read little-endian whatever the CPU. */
uint64_t balancer_hash(const void *data, size_t len) {
    const uint64_t m = 0xc6a4a7935bd1e995ull;
    const int r = 47;
    const unsigned char *p = data;
    uint64_t h = 0x5bd1e9955bd1e995ull ^ (len * m);
    while (len >= 8) {
        uint64_t k = 0;
        for (int i = 7; i >= 0; i--)
            k = (k << 8) | p[i];
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t k = 0;
        for (size_t i = len; i > 0; i--)
            k = (k << 8) | p[i - 1];
        h ^= k;
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h;
}

uint64_t lb_random(pf_balancer *b) {
    return pf_xorshift128p(b->rng); /* per balancer: no shared state on the request path */
}

void balancer_seed(pf_balancer *b, uint64_t seed) {
    b->rng[0] = lb_mix(seed);
    b->rng[1] = lb_mix(seed ^ 0x5851f42d4c957f2dull);
    if ((b->rng[0] | b->rng[1]) == 0)
        b->rng[1] = 1;
}

uint64_t lb_now_us(const pf_balancer *b) {
    return b->group->now_us();
}

void balancer_group_set_clock(pf_balancer_group *g, uint64_t (*now_us)(void)) {
    g->now_us = now_us ? now_us : pf_now_us;
}

/* ---- effective weights and draws ----------------------------------------------------- */

/* Ramp of endpoint ep in per mille at `now`; *ramping says whether it is still rising.
 * The window starts at the later of "first seen" and "healthy again"; 0 in both means
 * the endpoint was there from the start and never ramps. */
static uint64_t ramp_permille(const pf_balancer *b, const pf_endpoint *ep, uint64_t now,
                              bool *ramping) {
    uint64_t window = b->group->slow_start_us;
    if (window == 0 || !ep->stats)
        return LB_RAMP_FULL;
    uint64_t seen = atomic_load_explicit(&ep->stats->first_seen_ms, memory_order_relaxed);
    uint64_t healthy = atomic_load_explicit(&ep->stats->healthy_since_ms, memory_order_relaxed);
    uint64_t since = (seen > healthy ? seen : healthy) * 1000u;
    if (since == 0 || now >= since + window)
        return LB_RAMP_FULL;
    *ramping = true;
    uint64_t elapsed = now > since ? now - since : 0;
    uint64_t permille = elapsed * LB_RAMP_FULL / window;
    return permille < LB_RAMP_MIN ? LB_RAMP_MIN : permille;
}

static void weights_compute(pf_balancer *b, uint64_t now) {
    lb_weights *w = &b->weights;
    const pf_endpoint_set *set = b->set;
    w->total = 0;
    w->equal = true;
    w->ramping = false;
    uint64_t first = 0;
    for (size_t i = 0; i < set->count; i++) {
        const pf_endpoint *ep = &set->endpoints[i];
        w->w[i] = ep->healthy ? ep->weight * ramp_permille(b, ep, now, &w->ramping) : 0;
        w->total += w->w[i];
        w->cum[i] = w->total;
        if (!w->w[i])
            continue;
        if (!first)
            first = w->w[i];
        else if (w->w[i] != first)
            w->equal = false;
    }
    uint64_t step = b->group->slow_start_us / RAMP_STEPS;
    step = step < RAMP_STEP_MIN_US ? RAMP_STEP_MIN_US : step;
    step = step > RAMP_STEP_MAX_US ? RAMP_STEP_MAX_US : step;
    w->next_update_us = now + step;
}

static int weights_reset(pf_balancer *b) {
    lb_weights *w = &b->weights;
    size_t n = b->set->count ? b->set->count : 1;
    if (w->cap < n) {
        uint64_t *nw = realloc(w->w, n * sizeof *nw);
        if (!nw)
            return PF_ENOMEM;
        w->w = nw;
        uint64_t *cum = realloc(w->cum, n * sizeof *cum);
        if (!cum)
            return PF_ENOMEM;
        w->cum = cum;
        w->cap = n;
    }
    weights_compute(b, b->group->slow_start_us ? lb_now_us(b) : 0);
    return PF_OK;
}

size_t lb_draw(const pf_balancer *b, uint64_t r) {
    const uint64_t *cum = b->weights.cum;
    size_t lo = 0, hi = b->set->count - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

size_t lb_draw_one(pf_balancer *b) {
    return lb_draw(b, lb_random(b) % b->weights.total);
}

void lb_draw_two(pf_balancer *b, size_t *first, size_t *second) {
    const lb_weights *w = &b->weights;
    size_t a = lb_draw_one(b);
    *first = *second = a;
    if (w->total == w->w[a])
        return;
    /* Draw from the weight of everything but a: the range below a as is, the range above
     * a shifted past a's own. */
    uint64_t r = lb_random(b) % (w->total - w->w[a]);
    if (r >= w->cum[a] - w->w[a])
        r += w->w[a];
    *second = lb_draw(b, r);
}

uint64_t lb_active(const pf_balancer *b, size_t i) {
    const pf_endpoint_stats *s = b->set->endpoints[i].stats;
    return s ? atomic_load_explicit(&s->active_requests, memory_order_relaxed) : 0;
}

bool lb_avoided(const pf_balancer *b, size_t i, const pf_pick_context *ctx) {
    if (ctx->avoid_count == 0)
        return false;
    const char *addr = b->set->endpoints[i].addr.text;
    uint64_t h = balancer_hash(addr, strlen(addr));
    for (size_t k = 0; k < ctx->avoid_count; k++)
        if (ctx->avoid[k] == h)
            return true;
    return false;
}

size_t lb_first_admitted(const pf_balancer *b, const uint32_t *order, size_t len, size_t start,
                         const pf_pick_context *ctx) {
    size_t first_healthy = SIZE_MAX, avoided = SIZE_MAX;
    for (size_t k = 0; k < len; k++) {
        size_t i = order ? order[(start + k) % len] : (start + k) % len;
        if (i >= b->set->count || !b->set->endpoints[i].healthy)
            continue;
        if (lb_avoided(b, i, ctx)) {
            avoided = i;
            continue;
        }
        if (lb_ramp_admits(b, i, ctx->hash))
            return i;
        if (first_healthy == SIZE_MAX)
            first_healthy = i;
    }
    return first_healthy != SIZE_MAX ? first_healthy : avoided;
}

bool lb_ramp_admits(const pf_balancer *b, size_t i, uint64_t key) {
    const pf_endpoint *ep = &b->set->endpoints[i];
    if (!b->weights.ramping)
        return true;
    uint64_t permille = b->weights.w[i] / ep->weight;
    if (permille >= LB_RAMP_FULL)
        return true;
    /* The endpoint's own hash in the coin keeps keys of different endpoints independent. */
    uint64_t coin = lb_mix(key ^ balancer_hash(ep->addr.text, strlen(ep->addr.text)));
    return coin % LB_RAMP_FULL < permille;
}

/* ---- shared tables ----------------------------------------------------------------------- */

lb_table *lb_table_new(size_t size, bool with_points) {
    lb_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    t->size = size;
    t->owners = malloc((size ? size : 1) * sizeof *t->owners);
    t->points = with_points ? malloc((size ? size : 1) * sizeof *t->points) : NULL;
    if (!t->owners || (with_points && !t->points)) {
        lb_table_unref(t);
        return NULL;
    }
    return t;
}

void lb_table_unref(lb_table *t) {
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(t->points);
    free(t->owners);
    free(t);
}

/* Tables depend only on the endpoints' addresses and weights: a set that differs from the
 * last one only in health reuses the table (health is checked at pick time). */
static uint64_t table_fingerprint(const pf_endpoint_set *set) {
    uint64_t h = set->count;
    for (size_t i = 0; i < set->count; i++) {
        const pf_endpoint *ep = &set->endpoints[i];
        h = lb_mix(h ^ balancer_hash(ep->addr.text, strlen(ep->addr.text)));
        h = lb_mix(h ^ ep->weight);
    }
    return h;
}

lb_table *lb_table_acquire(pf_balancer_group *g, const pf_endpoint_set *set) {
    uint64_t fingerprint = table_fingerprint(set);
    lb_table *old = NULL, *t;
    /* Built under the lock: a worker arriving meanwhile waits for this table instead of
     * building the same one again. */
    pthread_mutex_lock(&g->lock);
    t = g->table;
    if (t && t->fingerprint == fingerprint && t->endpoint_count == set->count) {
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    } else {
        t = g->ops->build_table(set, g->table_size);
        if (t) {
            t->fingerprint = fingerprint;
            t->endpoint_count = set->count;
            atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed); /* the group's */
            old = g->table;
            g->table = t;
            g->tables_built++;
        }
    }
    pthread_mutex_unlock(&g->lock);
    lb_table_unref(old);
    return t;
}

void balancer_group_prepare(pf_balancer_group *g, const pf_endpoint_set *set) {
    if (g->ops->build_table && set)
        lb_table_unref(lb_table_acquire(g, set));
}

size_t balancer_group_tables_built(pf_balancer_group *g) {
    pthread_mutex_lock(&g->lock);
    size_t n = g->tables_built;
    pthread_mutex_unlock(&g->lock);
    return n;
}

/* ---- groups and balancers ---------------------------------------------------------------- */

static const balancer_ops *ops_for(pf_lb_policy policy) {
    switch (policy) {
    case PF_LB_ROUND_ROBIN:
    case PF_LB_WEIGHTED_ROUND_ROBIN:
        /* Both names honour weights (a user who writes weights means them); the plain
         * cursor is the fast path smooth WRR itself takes when weights are equal. */
        return &lb_round_robin_ops;
    case PF_LB_LEAST_REQUEST:
        return &lb_least_request_ops;
    case PF_LB_LEAST_RESPONSE_TIME:
        return &lb_least_response_time_ops;
    case PF_LB_RANDOM:
        return &lb_random_ops;
    case PF_LB_RING_HASH:
        return &lb_ring_hash_ops;
    case PF_LB_MAGLEV:
        return &lb_maglev_ops;
    }
    return &lb_round_robin_ops;
}

pf_balancer_group *balancer_group_new(const pf_config_cluster *cfg) {
    pf_balancer_group *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    atomic_init(&g->refs, 1);
    g->ops = ops_for(cfg->lb_policy);
    g->hash_on = cfg->hash_on;
    g->table_size = cfg->hash_table_size;
    if (g->table_size == 0)
        g->table_size =
            cfg->lb_policy == PF_LB_MAGLEV ? PF_DEFAULT_MAGLEV_SIZE : PF_DEFAULT_RING_HASH_SIZE;
    g->ewma_decay_us = (cfg->ewma_decay_ms ? cfg->ewma_decay_ms : PF_DEFAULT_EWMA_DECAY_MS) * 1000u;
    g->slow_start_us = cfg->slow_start_ms * 1000u;
    g->now_us = pf_now_us;
    pthread_mutex_init(&g->lock, NULL);
    return g;
}

void balancer_group_unref(pf_balancer_group *g) {
    if (!g || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    lb_table_unref(g->table);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

pf_balancer *balancer_new(pf_balancer_group *g) {
    pf_balancer *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    b->group = g;
    b->ops = g->ops;
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = pf_now_us() ^ (uint64_t)(uintptr_t)b;
    balancer_seed(b, seed);
    return b;
}

void balancer_free(pf_balancer *b) {
    if (!b)
        return;
    if (b->ops->free_state)
        b->ops->free_state(b);
    discovery_set_unref(b->set);
    free(b->weights.w);
    free(b->weights.cum);
    balancer_group_unref(b->group);
    free(b);
}

/* Takes `set` as the balancer's current one and rebuilds what derives from it. */
static void reset(pf_balancer *b, const pf_endpoint_set *set) {
    pf_endpoint_set *old = b->set;
    /* Sets are immutable and only their reference count changes; the cast drops the
     * const the caller's pointer carries for that reason alone. */
    b->set = discovery_set_ref((pf_endpoint_set *)set);
    b->set_version = set->version;
    b->cursor = (size_t)lb_random(b);
    b->fallback = weights_reset(b) != PF_OK || b->ops->reset(b) != PF_OK;
    if (b->fallback)
        log_warn("balancer: out of memory rebuilding for a new endpoint set; rotating until "
                 "the next one");
    discovery_set_unref(old);
}

/* Plain rotation over healthy endpoints: the fast path of round robin, and what any policy
 * does when its state could not be built. */
const pf_endpoint *lb_next_healthy(pf_balancer *b) {
    const pf_endpoint_set *set = b->set;
    for (size_t tries = 0; tries < set->count; tries++) {
        const pf_endpoint *ep = &set->endpoints[b->cursor++ % set->count];
        if (ep->healthy)
            return ep;
    }
    return NULL;
}

const pf_endpoint *balancer_pick(pf_balancer *b, const pf_endpoint_set *set,
                                 const pf_pick_context *ctx) {
    if (!set || set->healthy_count == 0)
        return NULL;
    /* Version 0 is a set never published (tests): derived state cannot be trusted. */
    if (b->set_version != set->version || set->version == 0 || b->set != set)
        reset(b, set);
    if (b->fallback)
        return lb_next_healthy(b);
    if (b->weights.ramping) {
        uint64_t now = lb_now_us(b);
        if (now >= b->weights.next_update_us)
            weights_compute(b, now);
    }
    static const pf_pick_context none = {0};
    return b->ops->pick(b, ctx ? ctx : &none);
}

/* Index of ep in the balancer's current set: direct when ep points into it, else by address
 * (ep is from an older set that a request in flight still holds). SIZE_MAX when absent. */
static size_t index_of(const pf_balancer *b, const pf_endpoint *ep) {
    const pf_endpoint_set *set = b->set;
    /* Both sets are alive (the request holds its own, the balancer this one), so their
     * memory cannot overlap and an address range check is exact. */
    uintptr_t p = (uintptr_t)ep, lo = (uintptr_t)set->endpoints;
    if (p >= lo && p < (uintptr_t)(set->endpoints + set->count))
        return (size_t)(ep - set->endpoints);
    size_t l = 0, h = set->count;
    while (l < h) {
        size_t mid = l + (h - l) / 2;
        int cmp = strcmp(set->endpoints[mid].addr.text, ep->addr.text);
        if (cmp == 0)
            return mid;
        if (cmp < 0)
            l = mid + 1;
        else
            h = mid;
    }
    return SIZE_MAX;
}

void balancer_on_response(pf_balancer *b, const pf_endpoint *ep, uint64_t latency_us) {
    if (!b->ops->on_response || !b->set || b->fallback || !ep)
        return;
    size_t i = index_of(b, ep);
    if (i != SIZE_MAX)
        b->ops->on_response(b, i, latency_us, lb_now_us(b));
}

/* ---- request keys ------------------------------------------------------------------------ */

static bool is_cookie_space(char c) {
    return c == ' ' || c == '\t';
}

/* Finds cookie `name` in the request's Cookie headers (RFC 6265 5.4: "name=value" pairs
 * separated by ";"; a client may send several Cookie lines). Names compare exactly. */
bool balancer_find_cookie(const pf_head *req, const char *name, const char **value, size_t *len) {
    size_t name_len = strlen(name);
    for (size_t i = 0; i < req->count; i++) {
        if (!http1_name_is(req, i, "cookie"))
            continue;
        const char *p = http1_value(req, i), *end = p + req->headers[i].value_len;
        while (p < end) {
            while (p < end && (is_cookie_space(*p) || *p == ';'))
                p++;
            const char *pair = p;
            while (p < end && *p != ';')
                p++;
            const char *eq = memchr(pair, '=', (size_t)(p - pair));
            if (!eq)
                continue;
            const char *n_end = eq;
            while (n_end > pair && is_cookie_space(n_end[-1]))
                n_end--;
            if ((size_t)(n_end - pair) != name_len || memcmp(pair, name, name_len) != 0)
                continue;
            const char *v = eq + 1, *v_end = p;
            while (v < v_end && is_cookie_space(*v))
                v++;
            while (v_end > v && is_cookie_space(v_end[-1]))
                v_end--;
            *value = v;
            *len = (size_t)(v_end - v);
            return true;
        }
    }
    return false;
}

pf_pick_context balancer_context(const pf_balancer *b, const pf_head *req, const char *client_ip,
                                 const char *path, size_t path_len) {
    pf_pick_context ctx = {0};
    const pf_config_hash_on *on = &b->group->hash_on;
    const char *key = NULL;
    size_t len = 0;
    switch (on->kind) {
    case PF_HASH_NONE:
        return ctx;
    case PF_HASH_HEADER: {
        size_t count;
        long i = http1_find(req, on->name, &count);
        if (i >= 0) {
            key = http1_value(req, (size_t)i);
            len = req->headers[i].value_len;
        }
        break;
    }
    case PF_HASH_COOKIE:
        if (!balancer_find_cookie(req, on->name, &key, &len))
            key = NULL;
        break;
    case PF_HASH_SOURCE_IP:
        key = client_ip;
        len = client_ip ? strlen(client_ip) : 0;
        break;
    case PF_HASH_PATH:
        key = path;
        len = path_len;
        break;
    }
    if (key) {
        ctx.hash = balancer_hash(key, len);
        ctx.has_hash = true;
    }
    return ctx;
}
