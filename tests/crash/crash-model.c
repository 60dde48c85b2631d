/* SPDX-License-Identifier: MIT */
/* The guest's view after a power cut (crash-model.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crash-model.h"

int crash_model_init(struct crash_model *m, uint64_t size)
{
    m->ngran = size / CRASH_GRANULE;
    m->dur = calloc(m->ngran, sizeof(*m->dur));
    m->cur = calloc(m->ngran, sizeof(*m->cur));
    m->pend = calloc(m->ngran, sizeof(*m->pend));
    if (!m->dur || !m->cur || !m->pend) {
        crash_model_free(m);
        return -ENOMEM;
    }
    for (uint64_t g = 0; g < m->ngran; g++) /* a new image reads as zeroes */
        m->dur[g].n = m->cur[g].n = 1;
    return 0;
}

void crash_model_free(struct crash_model *m)
{
    free(m->dur);
    free(m->cur);
    free(m->pend);
    m->dur = m->cur = m->pend = NULL;
}

/* Add V to S. */
static void set_add(struct crash_set *s, uint32_t v)
{
    for (unsigned i = 0; i < s->n; i++)
        if (s->v[i] == v)
            return;
    if (s->n == CRASH_SET_MAX)
        s->any = true;
    else
        s->v[s->n++] = v;
}

static void set_one(struct crash_set *s, uint32_t v)
{
    s->n = 1;
    s->any = false;
    s->v[0] = v;
}

void crash_model_mark(struct crash_model *m, uint64_t aux, uint64_t off, uint64_t len)
{
    uint32_t kind = aux & 0xff, tag = (uint32_t)(aux >> 8);
    uint64_t g0 = off / CRASH_GRANULE, g1 = (off + len) / CRASH_GRANULE;

    if (kind == MARK_FLUSH_DONE) {
        memcpy(m->dur, m->cur, m->ngran * sizeof(*m->dur));
        memset(m->pend, 0, m->ngran * sizeof(*m->pend));
        return;
    }
    if (g1 > m->ngran)
        g1 = m->ngran;
    for (uint64_t g = g0; g < g1; g++) {
        switch (kind) {
        case MARK_WRITE:
            set_one(&m->cur[g], tag);
            set_add(&m->pend[g], tag);
            break;
        case MARK_ZERO:
            set_one(&m->cur[g], 0);
            set_add(&m->pend[g], 0);
            break;
        case MARK_DISCARD:
            set_add(&m->cur[g], 0);
            set_add(&m->pend[g], 0);
            break;
        case MARK_FUA_DONE:
            set_one(&m->dur[g], tag);
            m->pend[g].n = 0;
            m->pend[g].any = false;
            break;
        }
    }
}

static bool set_has(const struct crash_set *s, uint32_t v)
{
    if (s->any)
        return true;
    for (unsigned i = 0; i < s->n; i++)
        if (s->v[i] == v)
            return true;
    return false;
}

bool crash_model_allows(const struct crash_model *m, uint64_t g, uint32_t tag)
{
    return set_has(&m->dur[g], tag) || set_has(&m->pend[g], tag);
}

/* Word J of the pattern of TAG at granule G. */
static uint32_t word(uint32_t tag, uint64_t g, unsigned j)
{
    uint64_t x = ((uint64_t)tag << 32 | (uint32_t)g) * 0x9e3779b97f4a7c15ull + j;

    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    return (uint32_t)(x >> 32);
}

void crash_pattern(uint8_t *buf, uint32_t tag, uint64_t g)
{
    uint32_t *w = (uint32_t *)buf;

    w[0] = tag;
    w[1] = (uint32_t)g;
    for (unsigned j = 2; j < CRASH_GRANULE / 4; j++)
        w[j] = word(tag, g, j);
}

int64_t crash_decode(const uint8_t *buf, uint64_t g)
{
    const uint32_t *w = (const uint32_t *)buf;
    uint32_t tag = w[0];

    if (tag == 0) {
        for (unsigned j = 0; j < CRASH_GRANULE / 4; j++)
            if (w[j])
                return -1;
        return 0;
    }
    if (w[1] != (uint32_t)g)
        return -1;
    for (unsigned j = 2; j < CRASH_GRANULE / 4; j++)
        if (w[j] != word(tag, g, j))
            return -1;
    return tag;
}

int crash_run_quiet(char *const argv[])
{
    pid_t pid = fork();
    int st;

    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);

        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}
