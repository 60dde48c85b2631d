/* SPDX-License-Identifier: MIT */
/*
 * VDI (VirtualBox): probe, header parsing and validation, open (block map,
 * differencing parent), close, create and info. The data path is in
 * vdi-io.c, check and repair in vdi-check.c; docs/vdi.md tells the rules.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../error.h"
#include "vdi.h"

static const char *const vdi_create_options[] = {"static", "subformat", "backing_file",
                                                 "backing_fmt", NULL};
/* backing_file: the parent of a differencing image, where the header does not name it */
static const char *const vdi_open_options[] = {"backing_file", NULL};

static const char vdi_text[] = "<<< Oracle VM VirtualBox Disk Image >>>\n";

static int vdi_probe(const uint8_t *head, size_t head_len, const uint8_t *tail, uint64_t file_size)
{
    (void)tail, (void)file_size;
    if (head_len < VDI_PRE_HEADER || get_le32(head + VDI_OFF_SIGNATURE) != VDI_SIGNATURE)
        return 0;
    return 100;
}

void vdi_uuid_str(const uint8_t *u, char out[37])
{
    snprintf(out, 37, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", get_le32(u),
             u[4] | u[5] << 8, u[6] | u[7] << 8, u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
}

static bool uuid_is_null(const uint8_t *u)
{
    static const uint8_t z[16];

    return memcmp(u, z, 16) == 0;
}

/* A random (version 4) UUID into U, stored as VirtualBox stores it. */
static int uuid_generate(const char *path, uint8_t *u)
{
    if (getrandom(u, 16, 0) != 16)
        return vdisk_error(errno, "%s: no random bytes for a UUID: %m", path);
    u[7] = (u[7] & 0x0f) | 0x40; /* time_hi_and_version, little endian */
    u[8] = (u[8] & 0x3f) | 0x80;
    return 0;
}

/*
 * A header of major version 0 (no offsets: the map follows the header, the
 * data the map; no extra block data, no parent modification UUID) rewritten
 * in S->hdr as version 1.1 would hold it, for the rest of the driver.
 */
static void convert_v0(struct vdi *s)
{
    uint8_t old[VDI_HEADER_END], *h = s->hdr;
    uint32_t blocks;

    memcpy(old, h, sizeof(old));
    memset(h + VDI_PRE_HEADER, 0, VDI_HEADER_END - VDI_PRE_HEADER);
    blocks = get_le32(old + 364);
    put_le32(h + VDI_OFF_HDR_SIZE, VDI_V0_HEADER);
    memcpy(h + VDI_OFF_TYPE, old + 72, 8 + VDI_COMMENT_LEN); /* type, flags, comment */
    put_le32(h + VDI_OFF_BMAP, VDI_PRE_HEADER + VDI_V0_HEADER);
    put_le32(h + VDI_OFF_DATA, VDI_PRE_HEADER + VDI_V0_HEADER + 4 * blocks);
    memcpy(h + VDI_OFF_DATA + 4, old + 336, 16); /* legacy geometry, sector size last */
    if (get_le32(h + VDI_OFF_SECTOR) == 0)
        put_le32(h + VDI_OFF_SECTOR, 512);
    memcpy(h + VDI_OFF_DISK_SIZE, old + 352, 12); /* disk size, block size */
    memcpy(h + VDI_OFF_BLOCKS, old + 364, 8);     /* blocks, allocated */
    memcpy(h + VDI_OFF_UUID, old + 372, 48);      /* image, modification, link */
}

/* Check the header in S->hdr against the file size; set the geometry fields. */
static int parse_header(struct vdi *s)
{
    const char *path = s->node->path;
    const uint8_t *h = s->hdr;
    uint32_t version = get_le32(h + VDI_OFF_VERSION), sector;
    uint64_t bmap_end, blocks_bytes;

    if (get_le32(h + VDI_OFF_SIGNATURE) != VDI_SIGNATURE)
        return vdisk_error(EINVAL, "%s: not a VDI image (bad signature)", path);
    if ((version >> 16) == 0) {
        s->v0 = true;
        convert_v0(s);
    } else if (version != VDI_VERSION_1_1)
        return vdisk_error(ENOTSUP, "%s: VDI version %u.%u is not supported", path, version >> 16,
                           version & 0xffff);
    s->hdr_size = get_le32(h + VDI_OFF_HDR_SIZE);
    s->type = get_le32(h + VDI_OFF_TYPE);
    s->off_bmap = get_le32(h + VDI_OFF_BMAP);
    s->off_data = get_le32(h + VDI_OFF_DATA);
    sector = get_le32(h + VDI_OFF_SECTOR);
    s->disk_size = get_le64(h + VDI_OFF_DISK_SIZE);
    s->block_size = get_le32(h + VDI_OFF_BLOCK_SIZE);
    s->block_extra = get_le32(h + VDI_OFF_BLOCK_XTRA);
    s->blocks = get_le32(h + VDI_OFF_BLOCKS);
    s->allocated = get_le32(h + VDI_OFF_ALLOCATED);

    if ((s->hdr_size < VDI_HDR_SIZE_MIN && !s->v0) || s->hdr_size > 4096)
        return vdisk_error(EINVAL, "%s: VDI header size %u is invalid", path, s->hdr_size);
    if (s->type < VDI_TYPE_DYNAMIC || s->type > VDI_TYPE_DIFF)
        return vdisk_error(EINVAL, "%s: VDI image type %u is unknown", path, s->type);
    if (s->type == VDI_TYPE_UNDO)
        return vdisk_error(ENOTSUP, "%s: VDI undo images are not supported", path);
    if (sector != 512)
        return vdisk_error(ENOTSUP, "%s: VDI sector size %u is not supported (only 512)", path,
                           sector);
    if (s->block_size < VDI_BLOCK_MIN || s->block_size > VDI_BLOCK_MAX ||
        (s->block_size & (s->block_size - 1)))
        return vdisk_error(EINVAL, "%s: VDI block size %u is not a power of two from 512 to 64M",
                           path, s->block_size);
    if (s->block_extra > VDI_BLOCK_MAX || (s->block_extra & 511))
        return vdisk_error(EINVAL, "%s: VDI extra block data of %u bytes is invalid", path,
                           s->block_extra);
    s->stride = (uint64_t)s->block_size + s->block_extra;
    if (s->blocks > VDI_BLOCKS_MAX)
        return vdisk_error(EFBIG, "%s: VDI block count %u is too large (at most %u)", path,
                           s->blocks, VDI_BLOCKS_MAX);
    if (s->allocated > s->blocks)
        return vdisk_error(EINVAL, "%s: VDI header says %u blocks allocated of %u", path,
                           s->allocated, s->blocks);
    blocks_bytes = (uint64_t)s->blocks * s->block_size;
    if (s->disk_size == 0 || s->disk_size > blocks_bytes || s->disk_size & 511 ||
        blocks_bytes - s->disk_size >= s->block_size)
        return vdisk_error(EINVAL,
                           "%s: VDI disk size %llu does not match %u blocks of %u bytes "
                           "(or is not a multiple of 512)",
                           path, (unsigned long long)s->disk_size, s->blocks, s->block_size);
    if (s->off_bmap < VDI_PRE_HEADER + s->hdr_size || ((s->off_bmap & 511) && !s->v0))
        return vdisk_error(EINVAL, "%s: VDI block map offset %u is invalid", path, s->off_bmap);
    bmap_end = s->off_bmap + (uint64_t)s->blocks * 4;
    if (bmap_end > s->file_size)
        return vdisk_error(EINVAL,
                           "%s: VDI block map (%u entries at %u) lies past the end of the "
                           "file (%llu bytes): truncated?",
                           path, s->blocks, s->off_bmap, (unsigned long long)s->file_size);
    if (s->off_data < bmap_end || ((s->off_data & 511) && !s->v0))
        return vdisk_error(EINVAL, "%s: VDI data offset %u is invalid (block map ends at %llu)",
                           path, s->off_data, (unsigned long long)bmap_end);
    if (s->type == VDI_TYPE_DIFF && uuid_is_null(vdi_uuid(s, VDI_UUID_LINK)))
        return vdisk_error(EINVAL, "%s: VDI differencing image without a parent UUID", path);
    if (s->type != VDI_TYPE_DIFF && !uuid_is_null(vdi_uuid(s, VDI_UUID_LINK)))
        return vdisk_error(EINVAL, "%s: VDI image of type %u has a parent UUID", path, s->type);
    return 0;
}

/* Read the block map into S->bmap (host order). */
static int read_bmap(struct vdi *s)
{
    size_t bytes = (size_t)s->blocks * 4;
    int r;

    s->bmap = malloc(bytes ? bytes : 4);
    s->owner = malloc(bytes ? bytes : 4);
    if (!s->bmap || !s->owner)
        return vdisk_error(ENOMEM, "%s: out of memory for a %zu-byte block map", s->node->path,
                           bytes);
    r = bytes ? vdisk_file_pread(s->file, s->bmap, bytes, s->off_bmap) : 0;
    if (r < 0)
        return r;
    for (uint32_t i = 0; i < s->blocks; i++)
        s->bmap[i] = le32toh(s->bmap[i]);
    return 0;
}

/* A static image whose blocks are all in order is one range of the file. */
static bool is_linear(const struct vdi *s)
{
    if (s->type != VDI_TYPE_STATIC || s->block_extra || s->allocated != s->blocks)
        return false;
    for (uint32_t i = 0; i < s->blocks; i++)
        if (s->bmap[i] != i)
            return false;
    return s->file_size >= s->off_data + s->disk_size;
}

/*
 * Does the file DIR/NAME look like the parent (a VDI whose image UUID is our
 * link UUID)? Only its first 472 bytes are read. 2: the modification UUID
 * matches too; 1: only the image UUID; 0: no.
 */
static int parent_candidate(const struct vdi *s, const char *dir, const char *name)
{
    uint8_t h[VDI_HEADER_END];
    struct vdisk_file *f;
    struct stat st;
    char *path;
    int score = 0;
    size_t n = strlen(name);

    if (n < 5 || strcasecmp(name + n - 4, ".vdi") != 0 || asprintf(&path, "%s/%s", dir, name) < 0)
        return 0;
    /* regular files only: opening a FIFO or a device could block or do worse */
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        vdisk_file_open(path, VDISK_FILE_RDONLY, &f) == 0) {
        if (vdisk_file_pread(f, h, sizeof(h), 0) == 0 &&
            get_le32(h + VDI_OFF_SIGNATURE) == VDI_SIGNATURE &&
            memcmp(h + VDI_OFF_UUID, vdi_uuid(s, VDI_UUID_LINK), 16) == 0)
            score = memcmp(h + VDI_OFF_UUID + 16 * VDI_UUID_MODIFY,
                           vdi_uuid(s, VDI_UUID_PARENT_MODIFY), 16) == 0
                        ? 2
                        : 1;
        vdisk_file_close(f);
    }
    free(path);
    return score;
}

/*
 * A differencing image whose header names no parent (as VirtualBox makes
 * them): the .vdi file beside it or one directory up (VirtualBox keeps
 * snapshots in Snapshots/ under the machine's directory) whose image UUID is
 * the child's link UUID, the one whose modification UUID matches first.
 */
static int find_parent_by_uuid(struct vdi *s)
{
    static const char *const where[] = {"", "../"};
    char *self = strdup(s->node->path), *slash, *best = NULL;
    const char *dir;
    int best_score = 0, seen = 0, r = 0;

    if (!self)
        return vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    dir = slash ? (*self ? self : "/") : ".";
    for (int w = 0; w < 2 && r == 0; w++) {
        char *d = NULL;
        DIR *dp;
        struct dirent *e;

        if (asprintf(&d, "%s/%s.", dir, where[w]) < 0) {
            r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
            break;
        }
        dp = opendir(d);
        while (dp && (e = readdir(dp)) && seen < 4096 && r == 0) {
            int score;

            seen++;
            if (w == 0 && slash && strcmp(e->d_name, slash + 1) == 0)
                continue;
            if (w == 0 && !slash && strcmp(e->d_name, s->node->path) == 0)
                continue;
            score = parent_candidate(s, d, e->d_name);
            if (score > best_score) {
                free(best);
                best_score = score;
                if (asprintf(&best, "%s%s", where[w], e->d_name) < 0) {
                    best = NULL;
                    r = vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
                }
            }
        }
        if (dp)
            closedir(dp);
        free(d);
    }
    free(self);
    if (r == 0 && !best)
        r = vdisk_error(ENOENT,
                        "%s: differencing VDI image: its header does not name the parent "
                        "(VirtualBox keeps it in its registry) and no .vdi file beside it or "
                        "one directory up has its parent's UUID: give it with -o "
                        "backing_file=PARENT.vdi",
                        s->node->path);
    if (r < 0) {
        free(best);
        return r;
    }
    s->parent = best;
    s->parent_found = true;
    return 0;
}

/* The parent's name: the open option, else the tag in the comment field, else a search. */
static int find_parent_name(struct vdi *s)
{
    const char *opt = vdisk_options_get(&s->node->opts, "backing_file");
    char comment[VDI_COMMENT_LEN + 1];
    const char *name;

    if (opt) {
        s->parent_from_option = true;
        s->parent = strdup(opt);
        return s->parent ? 0 : vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
    }
    memcpy(comment, s->hdr + VDI_OFF_COMMENT, VDI_COMMENT_LEN);
    comment[VDI_COMMENT_LEN] = 0;
    if (strncmp(comment, VDI_PARENT_TAG, strlen(VDI_PARENT_TAG)) != 0)
        return find_parent_by_uuid(s);
    name = comment + strlen(VDI_PARENT_TAG);
    /* a header may only name a file beside or below it, never an absolute path */
    if (!*name || name[0] == '/')
        return vdisk_error(EPERM,
                           "%s: the parent named in the header ('%s') is not a relative path: "
                           "give it with -o backing_file=PARENT.vdi",
                           s->node->path, name);
    s->parent = strdup(name);
    return s->parent ? 0 : vdisk_error(ENOMEM, "%s: out of memory", s->node->path);
}

/* Open the parent of a differencing image; its UUIDs must be the ones the child links to. */
static int open_parent(struct vdi *s)
{
    struct vdisk_node *node = s->node;
    const struct vdi *p;
    char want[37], got[37];
    int r = find_parent_name(s);

    if (r == 0)
        r = vdisk_node_open_backing(node, s->parent, "vdi");
    if (r < 0)
        return r;
    p = node->backing->priv;
    if (memcmp(vdi_uuid(s, VDI_UUID_LINK), vdi_uuid(p, VDI_UUID_IMAGE), 16) != 0) {
        vdi_uuid_str(vdi_uuid(s, VDI_UUID_LINK), want);
        vdi_uuid_str(vdi_uuid(p, VDI_UUID_IMAGE), got);
        return vdisk_error(EINVAL,
                           "%s: parent %s is not this image's parent: the child links to UUID "
                           "%s, the parent's UUID is %s",
                           node->path, node->backing->path, want, got);
    }
    if (!s->v0 && /* a version 0 header has no parent modification UUID */
        memcmp(vdi_uuid(s, VDI_UUID_PARENT_MODIFY), vdi_uuid(p, VDI_UUID_MODIFY), 16) != 0) {
        vdi_uuid_str(vdi_uuid(s, VDI_UUID_PARENT_MODIFY), want);
        vdi_uuid_str(vdi_uuid(p, VDI_UUID_MODIFY), got);
        return vdisk_error(EINVAL,
                           "%s: parent %s was changed after this image was made from it "
                           "(modification UUID %s, the child expects %s)",
                           node->path, node->backing->path, got, want);
    }
    return 0;
}

static void vdi_free(struct vdi *s)
{
    if (!s)
        return;
    pthread_rwlock_destroy(&s->lock);
    pthread_mutex_destroy(&s->alloc_lock);
    pthread_cond_destroy(&s->alloc_done);
    pthread_mutex_destroy(&s->pin_lock);
    pthread_cond_destroy(&s->pin_done);
    free(s->busy);
    free(s->bmap);
    free(s->owner);
    free(s->parent);
    free(s);
}

/* VDI_ZERO_BUF zeroes shared by every image (written as-is, never changed). */
static uint8_t zero_buf[VDI_ZERO_BUF] __attribute__((aligned(4096)));

/* Fault in the shared zeroes once: real pages, as a buffer for O_DIRECT writes. */
static void zero_buf_init(void)
{
    memset(zero_buf, 0, sizeof(zero_buf));
}

static int vdi_open(struct vdisk_node *node)
{
    struct vdi *s = calloc(1, sizeof(*s));
    int r;

    if (!s)
        return vdisk_error(ENOMEM, "%s: out of memory", node->path);
    vdisk_rwlock_init(&s->lock);
    pthread_mutex_init(&s->alloc_lock, NULL);
    pthread_cond_init(&s->alloc_done, NULL);
    pthread_mutex_init(&s->pin_lock, NULL);
    pthread_cond_init(&s->pin_done, NULL);
    s->node = node;
    s->file = node->file;
    node->priv = s;
    r = vdisk_file_get_size(s->file, &s->file_size);
    if (r < 0)
        goto err;
    if (s->file_size < VDI_HEADER_END) {
        r = vdisk_error(EINVAL, "%s: file of %llu bytes is too small for a VDI image", node->path,
                        (unsigned long long)s->file_size);
        goto err;
    }
    r = vdisk_file_pread(s->file, s->hdr, sizeof(s->hdr), 0);
    if (r == 0)
        r = parse_header(s);
    if (r == 0 && s->v0 && !node->read_only)
        r = vdisk_error(EROFS,
                        "%s: VDI header version 0 (VirtualBox's first) is read only here: "
                        "open it read-only (-r), or convert it",
                        node->path);
    if (r == 0)
        r = read_bmap(s);
    if (r < 0)
        goto err;
    vdi_scan(s);
    node->size = s->disk_size;
    if (is_linear(s)) {
        s->linear = true;
        node->caps |= VDISK_CAP_LINEAR;
        node->linear_offset = s->off_data;
    }
    { /* one 1 MiB buffer per process, not an allocation and memset per open */
        static pthread_once_t once = PTHREAD_ONCE_INIT;

        pthread_once(&once, zero_buf_init);
        s->zero_block = zero_buf;
    }
    s->busy = calloc(1, s->blocks / 8 + 1);
    if (!s->busy) {
        r = vdisk_error(ENOMEM, "%s: out of memory", node->path);
        goto err;
    }
    if (s->type == VDI_TYPE_DIFF) {
        r = open_parent(s);
        if (r < 0)
            goto err;
    } else if (vdisk_options_get(&node->opts, "backing_file")) {
        r = vdisk_error(EINVAL, "%s: backing_file: only a differencing VDI image has a parent",
                        node->path);
        goto err;
    }
    if (!node->read_only) {
        /* as VirtualBox: a new modification UUID, so children made from the old state refuse us */
        r = uuid_generate(node->path, s->hdr + VDI_OFF_UUID + 16 * VDI_UUID_MODIFY);
        if (r == 0)
            r = vdisk_file_pwrite(s->file, s->hdr, VDI_HEADER_END, 0);
        if (r == 0)
            r = vdisk_file_flush(s->file);
        if (r < 0)
            goto err;
    }
    return 0;

err:
    node->priv = NULL;
    vdi_free(s);
    return r;
}

static void vdi_close(struct vdisk_node *node)
{
    struct vdi *s = node->priv;

    if (!node->read_only && s->dirty)
        (void)vdi_write_metadata(s);
    vdi_free(s);
    node->priv = NULL;
}

static int vdi_get_info(struct vdisk_node *node, struct vdisk_info *info)
{
    static const char *const types[] = {"?", "dynamic", "static", "undo", "differencing"};
    struct vdi *s = node->priv;
    static const char *const keys[] = {"uuid", "modification_uuid", "parent_uuid",
                                       "parent_modification_uuid"};
    char u[37];

    info->cluster_size = s->block_size;
    info->backing_file = s->parent;
    info->backing_format = s->parent ? "vdi" : NULL;
    vdisk_info_add(info, "image_type", "%s", types[s->type]);
    vdisk_info_add(info, "version", "%s", s->v0 ? "0" : "1.1");
    vdisk_info_add(info, "block_size", "%u", s->block_size);
    if (s->block_extra)
        vdisk_info_add(info, "block_extra", "%u", s->block_extra);
    vdisk_info_add(info, "blocks", "%u", s->blocks);
    vdisk_info_add(info, "blocks_allocated", "%u", s->allocated);
    for (int i = 0; i < VDI_NUUIDS; i++) {
        if (i >= VDI_UUID_LINK && s->type != VDI_TYPE_DIFF)
            break;
        vdi_uuid_str(vdi_uuid(s, i), u);
        vdisk_info_add(info, keys[i], "%s", u);
    }
    if (s->parent)
        vdisk_info_add(info, "parent", "%s%s", s->parent,
                       s->parent_from_option ? " (given at open)"
                       : s->parent_found     ? " (found by its UUID)"
                                             : " (from the header comment)");
    return 0;
}

/* Options for create, checked. */
struct create_opts {
    bool fixed;
    const char *backing;
};

static int parse_create_opts(const char *path, const struct vdisk_options *o, struct create_opts *c)
{
    const char *sub = vdisk_options_get(o, "subformat"), *bf = vdisk_options_get(o, "backing_fmt");
    int r = vdisk_options_get_bool(o, "static", false, &c->fixed);

    if (r < 0)
        return r;
    if (sub && !strcmp(sub, "static"))
        c->fixed = true;
    else if (sub && strcmp(sub, "dynamic"))
        return vdisk_error(EINVAL, "%s: subformat must be static or dynamic, not '%s'", path, sub);
    c->backing = vdisk_options_get(o, "backing_file");
    if (bf && strcmp(bf, "vdi"))
        return vdisk_error(EINVAL, "%s: the parent of a VDI image is a VDI image, not %s", path,
                           bf);
    if (c->backing && c->fixed)
        return vdisk_error(EINVAL, "%s: a differencing VDI image cannot be static", path);
    if (c->backing &&
        (!*c->backing || strlen(c->backing) + strlen(VDI_PARENT_TAG) > VDI_COMMENT_LEN - 1))
        return vdisk_error(EINVAL, "%s: backing_file name is empty or longer than %zu bytes", path,
                           VDI_COMMENT_LEN - 1 - strlen(VDI_PARENT_TAG));
    return 0;
}

/* The parent's size and UUIDs into HDR (link, parent modification). */
static int read_parent(struct vdisk_node *node, const char *name, uint64_t *size, uint8_t *hdr)
{
    struct vdisk_image *img;
    char *path = vdisk_node_resolve(node, name);
    uint8_t ph[VDI_HEADER_END];
    struct vdisk_file *f;
    int r;

    if (!path)
        return vdisk_error(ENOMEM, "%s: out of memory", node->file->path);
    /* open it as an image first: this checks it (and its own chain) */
    r = vdisk_open(path, "vdi", VDISK_OPEN_RDONLY, NULL, &img);
    if (r < 0) {
        r = vdisk_error_prefix(-r, "%s: backing file %s", node->file->path, path);
        goto out;
    }
    if (*size == 0)
        *size = vdisk_get_size(img);
    vdisk_close(img);
    r = vdisk_file_open(path, VDISK_FILE_RDONLY, &f);
    if (r < 0)
        goto out;
    r = vdisk_file_pread(f, ph, sizeof(ph), 0);
    vdisk_file_close(f);
    if (r < 0)
        goto out;
    memcpy(hdr + VDI_OFF_UUID + 16 * VDI_UUID_LINK, ph + VDI_OFF_UUID + 16 * VDI_UUID_IMAGE, 16);
    memcpy(hdr + VDI_OFF_UUID + 16 * VDI_UUID_PARENT_MODIFY,
           ph + VDI_OFF_UUID + 16 * VDI_UUID_MODIFY, 16);
out:
    free(path);
    return r;
}

/*
 * The parent's path relative to the directory of the child CHILD (a header
 * names no absolute path, see find_parent_name): malloc'd, NULL on failure.
 */
static char *relative_parent(const char *child, const char *parent)
{
    char *dir = strdup(child), *slash, *cdir = NULL, *real = realpath(parent, NULL), *out = NULL;
    size_t common = 0, ups = 0, len;

    if (!dir || !real)
        goto out;
    slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = 0;
    cdir = realpath(slash ? dir : ".", NULL);
    if (!cdir)
        goto out;
    len = strlen(cdir);
    if (len == 1) /* the root */
        len = 0;
    for (size_t i = 0; i <= len; i++)
        if ((i == len || cdir[i] == '/') && strncmp(cdir, real, i) == 0 && real[i] == '/')
            common = i;
    for (size_t i = common; i < len; i++)
        if (cdir[i] == '/')
            ups++;
    out = malloc(3 * ups + strlen(real) + 1);
    if (!out)
        goto out;
    out[0] = 0;
    for (size_t i = 0; i < ups; i++)
        strcat(out, "../");
    strcat(out, real + common + 1);
out:
    free(dir);
    free(cdir);
    free(real);
    return out;
}

/* Lay out a new image: header, block map, and for a static one every block, in order. */
static int vdi_create(struct vdisk_node *node, uint64_t size, const struct vdisk_options *o)
{
    struct vdisk_file *f = node->file;
    struct create_opts c = {0};
    uint64_t blocks, bmap_bytes, off_data;
    uint8_t *buf = NULL;
    int r = parse_create_opts(f->path, o, &c);

    if (r < 0)
        return r;
    buf = calloc(1, 1u << 20);
    if (!buf)
        return vdisk_error(ENOMEM, "%s: out of memory", f->path);
    if (c.backing) {
        r = read_parent(node, c.backing, &size, buf);
        if (r < 0)
            goto out;
    }
    if (size == 0 || (size & 511)) {
        r = vdisk_error(EINVAL, "%s: VDI size must be a non-zero multiple of 512 bytes", f->path);
        goto out;
    }
    blocks = (size + (1u << 20) - 1) >> 20;
    if (blocks > VDI_BLOCKS_MAX) {
        r = vdisk_error(EFBIG, "%s: size %llu is too large for a VDI image", f->path,
                        (unsigned long long)size);
        goto out;
    }
    bmap_bytes = blocks * 4;
    /* the map right after the header (one write updates both); data 1 MiB aligned */
    off_data = (512 + bmap_bytes + (1u << 20) - 1) & ~((1ull << 20) - 1);
    memcpy(buf, vdi_text, sizeof(vdi_text) - 1);
    put_le32(buf + VDI_OFF_SIGNATURE, VDI_SIGNATURE);
    put_le32(buf + VDI_OFF_VERSION, VDI_VERSION_1_1);
    put_le32(buf + VDI_OFF_HDR_SIZE, VDI_HDR_SIZE_PLUS);
    put_le32(buf + VDI_OFF_TYPE, c.backing ? VDI_TYPE_DIFF
                                 : c.fixed ? VDI_TYPE_STATIC
                                           : VDI_TYPE_DYNAMIC);
    if (c.backing) {
        char *bpath = vdisk_node_resolve(node, c.backing), *rel = NULL;

        rel = bpath ? relative_parent(f->path, bpath) : NULL;
        free(bpath);
        if (!rel || strlen(rel) + strlen(VDI_PARENT_TAG) > VDI_COMMENT_LEN - 1) {
            r = vdisk_error(rel ? ENAMETOOLONG : ENOMEM,
                            "%s: the parent's path relative to the image is too long", f->path);
            free(rel);
            goto out;
        }
        snprintf((char *)buf + VDI_OFF_COMMENT, VDI_COMMENT_LEN, "%s%s", VDI_PARENT_TAG, rel);
        free(rel);
    }
    put_le32(buf + VDI_OFF_BMAP, 512);
    put_le32(buf + VDI_OFF_DATA, (uint32_t)off_data);
    put_le32(buf + VDI_OFF_SECTOR, 512);
    put_le64(buf + VDI_OFF_DISK_SIZE, size);
    put_le32(buf + VDI_OFF_BLOCK_SIZE, 1u << 20);
    put_le32(buf + VDI_OFF_BLOCKS, (uint32_t)blocks);
    put_le32(buf + VDI_OFF_ALLOCATED, c.fixed ? (uint32_t)blocks : 0);
    r = uuid_generate(f->path, buf + VDI_OFF_UUID + 16 * VDI_UUID_IMAGE);
    if (r == 0)
        r = uuid_generate(f->path, buf + VDI_OFF_UUID + 16 * VDI_UUID_MODIFY);
    if (r == 0)
        r = vdisk_file_pwrite(f, buf, 512, 0);
    /* the block map, in chunks of 1 MiB */
    for (uint64_t done = 0; r == 0 && done < bmap_bytes;) {
        uint64_t n = bmap_bytes - done < (1u << 20) ? bmap_bytes - done : (1u << 20);

        for (uint64_t i = 0; i < n / 4; i++)
            put_le32(buf + 4 * i, c.fixed ? (uint32_t)(done / 4 + i) : VDI_FREE);
        r = vdisk_file_pwrite(f, buf, n, 512 + done);
        done += n;
    }
    if (r == 0)
        r = vdisk_file_truncate(f, c.fixed ? off_data + blocks * (1u << 20) : off_data);
    if (r == 0 && c.fixed)
        r = vdisk_file_preallocate(f, off_data, blocks << 20);
out:
    free(buf);
    return r;
}

const struct vdisk_format vdisk_format_vdi = {
    .name = "vdi",
    .flags = VDISK_FORMAT_THREAD_SAFE,
    .caps = VDISK_CAP_THREAD_SAFE,
    .create_options = vdi_create_options,
    .open_options = vdi_open_options,
    .probe = vdi_probe,
    .create = vdi_create,
    .open = vdi_open,
    .close = vdi_close,
    .map = vdi_map,
    .release = vdi_release,
    .write = vdi_write,
    .flush = vdi_flush,
    .discard = vdi_discard,
    .write_zeroes = vdi_write_zeroes,
    .get_info = vdi_get_info,
    .check = vdi_check,
    .resize = vdi_resize, /* vdi-resize.c */
};
