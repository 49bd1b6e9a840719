/* addr_set.c: see addr_set.h. Slot 0 means empty, so 0 is never a member. */
#include "addr_set.h"
#include <stdlib.h>

static size_t slot_of(const uint64_t *slot, size_t cap, uint64_t v) {
    size_t i = (size_t)((v * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
    while (slot[i] && slot[i] != v) i = (i + 1) & (cap - 1);
    return i;
}

int efla_addr_set_add(efla_addr_set *s, uint64_t v) {
    if (2 * (s->n + 1) > s->cap) {   /* at most half full */
        size_t cap = s->cap ? 2 * s->cap : 256;
        uint64_t *p = calloc(cap, sizeof *p);
        if (!p) return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i]) p[slot_of(p, cap, s->slot[i])] = s->slot[i];
        free(s->slot);
        s->slot = p;
        s->cap = cap;
    }
    size_t i = slot_of(s->slot, s->cap, v);
    if (s->slot[i]) return 0;
    s->slot[i] = v;
    s->n++;
    return 1;
}

int efla_addr_set_has(const efla_addr_set *s, uint64_t v) {
    return s->cap && v && s->slot[slot_of(s->slot, s->cap, v)] == v;
}

void efla_addr_set_free(efla_addr_set *s) {
    free(s->slot);
    s->slot = NULL;
    s->n = s->cap = 0;
}
