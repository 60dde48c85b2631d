/* SPDX-License-Identifier: MIT */
/*
 * The VHDX log (MS-VHDX 2.3): replay at open, and the writer every metadata
 * change goes through.
 *
 * Replay: among the valid entries whose log GUID is the header's, the one
 * with the highest sequence number is the head; its tail field names the
 * first entry of the active sequence, which must run with consecutive
 * sequence numbers to the head. Each entry's data and zero descriptors are
 * applied in order: to the file for a writable open (then flush and clear the
 * log GUID), or kept as an in-memory overlay for a read-only open, which
 * never writes the file.
 *
 * Writer: dirty BAT and sector-bitmap pages wait in memory until a flush.
 * Then: flush the data they point at, write one entry per batch (its tail is
 * itself), flush, write the pages in place, flush, and overwrite the entry's
 * first sector so that at most one valid entry exists: a crash at any point
 * leaves the old state or, replayed, the new one.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "../error.h"
#include "vhdx.h"

#define LOG_HDR  64u
#define LOG_DESC 32u

/* An entry that passed every check. */
struct entry {
    uint32_t pos, len, tail, ndesc;
    uint64_t seq, flushed, last;
    uint8_t *buf; /* the whole entry */
};

/* Read LEN bytes of the log at POS, wrapping at its end. */
static int log_read(struct vhdx *s, void *buf, uint32_t len, uint32_t pos)
{
    uint32_t first = s->log_len - pos < len ? s->log_len - pos : len;
    int r = vdisk_file_pread(s->file, buf, first, s->log_off + pos);

    if (r == 0 && first < len)
        r = vdisk_file_pread(s->file, (uint8_t *)buf + first, len - first, s->log_off);
    return r;
}

/* Is the target [OFF, OFF+LEN) of a descriptor one the log may write? */
static bool target_ok(const struct vhdx *s, uint64_t off, uint64_t len, uint64_t last)
{
    uint64_t end = s->file_size > last ? s->file_size : last;

    return off % VHDX_PAGE == 0 && len % VHDX_PAGE == 0 && off >= MiB && off + len >= off &&
           off + len <= end && !(off < s->log_off + s->log_len && s->log_off < off + len);
}

/* Read and check the entry at POS; 1 valid (E filled, E->buf owned), 0 not, -errno. */
static int entry_read(struct vhdx *s, uint32_t pos, struct entry *e)
{
    uint8_t h[LOG_HDR];
    uint32_t nsect, dsect, ndata = 0;
    int r = log_read(s, h, LOG_HDR, pos);

    if (r < 0)
        return r;
    e->pos = pos;
    e->len = get_le32(h + 8);
    e->tail = get_le32(h + 12);
    e->seq = get_le64(h + 16);
    e->ndesc = get_le32(h + 24);
    e->flushed = get_le64(h + 48);
    e->last = get_le64(h + 56);
    if (memcmp(h, "loge", 4) != 0 || memcmp(h + 32, &s->log_guid, 16) != 0 || e->len == 0 ||
        e->len % VHDX_PAGE || e->len > s->log_len || e->tail % VHDX_PAGE || e->tail >= s->log_len ||
        e->seq == 0)
        return 0;
    nsect = e->len / VHDX_PAGE;
    dsect = (uint32_t)((LOG_HDR + (uint64_t)LOG_DESC * e->ndesc + VHDX_PAGE - 1) / VHDX_PAGE);
    if (dsect > nsect)
        return 0;
    e->buf = malloc(e->len);
    if (!e->buf)
        return vdisk_error(ENOMEM, "%s: out of memory for a log entry", s->node->path);
    r = log_read(s, e->buf, e->len, pos);
    if (r < 0 || get_le32(e->buf + 4) != vhdx_checksum(e->buf, e->len, 4))
        goto bad;
    /* from here on the entry is whole (its CRC holds): a bad one is an error, not a torn write */
    r = -EINVAL;
    for (uint32_t i = 0; i < e->ndesc; i++) {
        const uint8_t *d = e->buf + LOG_HDR + LOG_DESC * i;

        if (memcmp(d, "zero", 4) == 0) {
            if (!target_ok(s, get_le64(d + 16), get_le64(d + 8), e->last) ||
                get_le64(d + 24) != e->seq)
                goto bad;
        } else if (memcmp(d, "desc", 4) == 0) {
            const uint8_t *sec = e->buf + (uint64_t)(dsect + ndata) * VHDX_PAGE;

            if (dsect + ndata >= nsect || get_le64(d + 24) != e->seq ||
                !target_ok(s, get_le64(d + 16), VHDX_PAGE, e->last) || memcmp(sec, "data", 4) != 0 ||
                get_le32(sec + 4) != (uint32_t)(e->seq >> 32) ||
                get_le32(sec + 4092) != (uint32_t)e->seq)
                goto bad;
            ndata++;
        } else {
            goto bad;
        }
    }
    if (dsect + ndata != nsect)
        goto bad;
    return 1;
bad:
    free(e->buf);
    e->buf = NULL;
    if (r == -EINVAL)
        return vdisk_error(EINVAL,
                           "%s: VHDX log entry %llu at log offset %u is invalid: a "
                           "descriptor writes outside the file, over the log or over the "
                           "headers, or does not match its data",
                           s->node->path, (unsigned long long)e->seq, pos);
    return r < 0 ? r : 0;
}

/* Apply the entry E: to the file, or to the in-memory overlay. */
static int entry_apply(struct vhdx *s, const struct entry *e, bool to_disk)
{
    uint32_t dsect =
        (uint32_t)((LOG_HDR + (uint64_t)LOG_DESC * e->ndesc + VHDX_PAGE - 1) / VHDX_PAGE);
    uint32_t ndata = 0;
    int r = 0;

    for (uint32_t i = 0; i < e->ndesc && r == 0; i++) {
        const uint8_t *d = e->buf + LOG_HDR + LOG_DESC * i;
        uint64_t off = get_le64(d + 16), len = VHDX_PAGE;
        uint8_t *page = NULL;

        if (memcmp(d, "desc", 4) == 0) {
            const uint8_t *sec = e->buf + (uint64_t)(dsect + ndata++) * VHDX_PAGE;

            page = malloc(VHDX_PAGE);
            if (!page)
                return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
            memcpy(page, d + 8, 8);          /* leading bytes */
            memcpy(page + 8, sec + 8, 4084); /* the sector's data */
            memcpy(page + 4092, d + 4, 4);   /* trailing bytes */
        } else {
            len = get_le64(d + 8);
        }
        if (to_disk) {
            r = page ? vdisk_file_pwrite(s->file, page, len, off)
                     : vdisk_file_zero_alloc(s->file, off, len);
            free(page);
        } else {
            struct vhdx_overlay *o = realloc(s->ovl, (s->novl + 1) * sizeof(*o));

            if (!o) {
                free(page);
                return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
            }
            s->ovl = o;
            s->ovl[s->novl++] = (struct vhdx_overlay){off, len, page};
        }
    }
    return r;
}

/* Find the head: the valid entry with the highest sequence number. */
static int find_head(struct vhdx *s, struct entry *head)
{
    int found = 0;

    for (uint64_t pos = 0; pos < s->log_len; pos += VHDX_PAGE) {
        struct entry e = {0};
        int r = entry_read(s, pos, &e);

        if (r < 0)
            return r;
        if (r == 0)
            continue;
        if (!found || e.seq > head->seq) {
            free(head->buf);
            *head = e;
            found = 1;
        } else {
            free(e.buf);
        }
        pos += e.len - VHDX_PAGE; /* an entry's own sectors hold no other entry */
    }
    return found;
}

static int broken(struct vhdx *s, uint32_t pos)
{
    return vdisk_error(EINVAL,
                       "%s: VHDX log is corrupt: its active sequence is broken at log "
                       "offset %u",
                       s->node->path, pos);
}

int vhdx_log_replay(struct vhdx *s)
{
    const char *path = s->node->path;
    bool to_disk = !s->node->read_only;
    struct entry head = {0}, *seqv = NULL;
    uint32_t pos;
    uint64_t n = 0;
    int r = find_head(s, &head);

    if (r < 0)
        return r;
    if (r == 0) { /* a log GUID but no valid entry: nothing to replay */
        s->log_state = "clean";
        goto clear;
    }
    if (s->file_size < head.flushed)
        r = vdisk_error(EINVAL,
                        "%s: VHDX log says the file had %llu bytes, it has %llu "
                        "(truncated?)",
                        path, (unsigned long long)head.flushed, (unsigned long long)s->file_size);
    /* from the tail to the head, consecutive sequence numbers, all checked before any is applied */
    for (pos = head.tail; r >= 0;
         pos = (uint32_t)(((uint64_t)pos + seqv[n - 1].len) % s->log_len)) {
        struct entry *grown;

        if (n > s->log_len / VHDX_PAGE) {
            r = broken(s, pos);
            break;
        }
        grown = realloc(seqv, (n + 1) * sizeof(*seqv));
        if (!grown) {
            r = vdisk_error(ENOMEM, "%s: out of memory", path);
            break;
        }
        seqv = grown;
        memset(&seqv[n], 0, sizeof(seqv[n]));
        r = entry_read(s, pos, &seqv[n]);
        if (r <= 0 || (n && seqv[n].seq != seqv[n - 1].seq + 1)) {
            n += seqv[n].buf != NULL;
            r = r < 0 ? r : broken(s, pos);
            break;
        }
        if (seqv[n++].seq == head.seq)
            break;
    }
    for (uint64_t i = 0; r >= 0 && i < n; i++)
        r = entry_apply(s, &seqv[i], to_disk);
    for (uint64_t i = 0; i < n; i++)
        free(seqv[i].buf);
    free(seqv);
    if (r < 0)
        goto out;
    s->log_entries = (unsigned)n;
    s->log_state = to_disk ? "replayed" : "replayed in memory";
    if (head.last > s->file_size) {
        if (to_disk && (r = vdisk_file_truncate(s->file, head.last)) < 0)
            goto out;
        s->file_size = head.last;
    }
clear:
    r = 0;
    if (to_disk) { /* the replay is durable before the log is forgotten */
        r = vdisk_file_flush(s->file);
        memset(&s->log_guid, 0, sizeof(s->log_guid));
        if (r == 0)
            r = vhdx_write_headers(s);
    }
out:
    free(head.buf);
    return r;
}

void vhdx_crash_point(struct vhdx *s)
{
    if (s->stop_after >= 0 && s->stop_after-- == 0)
        _exit(99);
}

int vhdx_log_dirty(struct vhdx *s, uint64_t off, uint8_t *p)
{
    for (unsigned i = 0; i < s->ndirty; i++)
        if (s->dirty[i].off == off)
            return 0;
    if (s->ndirty == s->dirty_cap) {
        unsigned cap = s->dirty_cap ? s->dirty_cap * 2 : 64;
        struct vhdx_dirty *d = realloc(s->dirty, cap * sizeof(*d));

        if (!d)
            return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
        s->dirty = d;
        s->dirty_cap = cap;
    }
    s->dirty[s->ndirty++] = (struct vhdx_dirty){off, p};
    return 0;
}

/* Write pages D[0..N) through one log entry. */
static int commit_batch(struct vhdx *s, const struct vhdx_dirty *d, unsigned n)
{
    uint32_t dsect = (LOG_HDR + LOG_DESC * n + VHDX_PAGE - 1) / VHDX_PAGE;
    uint32_t len = (dsect + n) * VHDX_PAGE, pos;
    uint8_t *b = calloc(1, len);
    int r = 0;

    if (!b)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    if (s->log_pos + len > s->log_len) /* entries never wrap: start over at the top */
        s->log_pos = 0;
    pos = s->log_pos;
    memcpy(b, "loge", 4);
    put_le32(b + 8, len);
    put_le32(b + 12, pos); /* the tail: this entry alone is the active sequence */
    put_le64(b + 16, s->log_seq);
    put_le32(b + 24, n);
    memcpy(b + 32, &s->log_guid, 16);
    put_le64(b + 48, s->file_size);
    put_le64(b + 56, s->file_size);
    for (unsigned i = 0; i < n; i++) {
        uint8_t *desc = b + LOG_HDR + LOG_DESC * i, *sec = b + (dsect + i) * VHDX_PAGE;

        memcpy(desc, "desc", 4);
        memcpy(desc + 4, d[i].bytes + 4092, 4);
        memcpy(desc + 8, d[i].bytes, 8);
        put_le64(desc + 16, d[i].off);
        put_le64(desc + 24, s->log_seq);
        memcpy(sec, "data", 4);
        put_le32(sec + 4, (uint32_t)(s->log_seq >> 32));
        memcpy(sec + 8, d[i].bytes + 8, 4084);
        put_le32(sec + 4092, (uint32_t)s->log_seq);
    }
    put_le32(b + 4, vhdx_checksum(b, len, 4));
    for (uint32_t k = 0; k < len && r == 0; k += VHDX_PAGE) { /* sector by sector */
        r = vdisk_file_pwrite(s->file, b + k, VHDX_PAGE, s->log_off + pos + k);
        vhdx_crash_point(s);
    }
    if (r == 0)
        r = vdisk_file_flush(s->file);
    for (unsigned i = 0; i < n && r == 0; i++) {
        r = vdisk_file_pwrite(s->file, d[i].bytes, VHDX_PAGE, d[i].off);
        vhdx_crash_point(s);
    }
    if (r == 0)
        r = vdisk_file_flush(s->file);
    if (r == 0) { /* applied and durable: the entry is spent (the next flush makes this durable) */
        memset(b, 0, VHDX_PAGE);
        r = vdisk_file_pwrite(s->file, b, VHDX_PAGE, s->log_off + pos);
        vhdx_crash_point(s);
    }
    if (r == 0) {
        s->log_seq++;
        s->log_pos = pos + len;
    }
    free(b);
    return r;
}

int vhdx_log_commit(struct vhdx *s)
{
    /* an entry uses at most half the log, so it never overwrites the previous one */
    unsigned max = s->log_len / 2 / VHDX_PAGE - 1, done = 0;
    int r;

    if (s->ndirty == 0)
        return vdisk_file_flush(s->file);
    r = vdisk_file_flush(s->file); /* the data before the metadata that points at it */
    while (r == 0 && done < s->ndirty) {
        unsigned n = s->ndirty - done < max ? s->ndirty - done : max;

        r = commit_batch(s, s->dirty + done, n);
        done += n;
    }
    for (unsigned i = 0; r == 0 && i < s->npunch; i++) /* advisory: the data is gone anyway */
        (void)vdisk_file_punch_hole(s->file, s->punch[i], s->block_size);
    if (r == 0)
        s->npunch = 0;
    if (r == 0) {
        for (unsigned i = 0; i < s->ndirty; i++)
            if (s->dirty[i].off >= s->bat_off && s->dirty[i].off < s->bat_off + s->bat_len)
                s->bat_page_dirty[(s->dirty[i].off - s->bat_off) / VHDX_PAGE] = 0;
        s->ndirty = 0;
    }
    return r;
}

int vhdx_session_begin(struct vhdx *s)
{
    if (s->session)
        return 0;
    if (s->log_len < 2 * MiB / 2) /* the spec's minimum is 1 MiB */
        return vdisk_error(ENOTSUP, "%s: VHDX image has no log: vdisk cannot change it safely",
                           s->node->path);
    vhdx_guid_new(&s->file_write_guid);
    vhdx_guid_new(&s->data_write_guid);
    vhdx_guid_new(&s->log_guid);
    s->log_seq = 1;
    s->log_pos = 0;
    int r = vhdx_write_headers(s);
    if (r == 0)
        s->session = true;
    return r;
}

int vhdx_session_end(struct vhdx *s)
{
    int r;

    if (!s->session)
        return 0;
    r = vhdx_log_commit(s);
    if (r == 0) {
        memset(&s->log_guid, 0, sizeof(s->log_guid));
        r = vhdx_write_headers(s);
    }
    if (r == 0)
        s->session = false;
    return r;
}
