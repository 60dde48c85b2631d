/* SPDX-License-Identifier: MIT */
/* Fixed-width big- and little-endian fields of on-disk structures, at any alignment. */
#ifndef VDISK_FORMAT_BYTES_H
#define VDISK_FORMAT_BYTES_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

#define VDISK_BYTES_FIELD(bits, order)                                                             \
    static inline uint##bits##_t get_##order##bits(const void *p)                                  \
    {                                                                                              \
        uint##bits##_t v;                                                                          \
        memcpy(&v, p, sizeof(v));                                                                  \
        return order##bits##toh(v);                                                                \
    }                                                                                              \
    static inline void put_##order##bits(void *p, uint##bits##_t v)                                \
    {                                                                                              \
        v = hto##order##bits(v);                                                                   \
        memcpy(p, &v, sizeof(v));                                                                  \
    }

VDISK_BYTES_FIELD(16, be)
VDISK_BYTES_FIELD(32, be)
VDISK_BYTES_FIELD(64, be)
VDISK_BYTES_FIELD(16, le)
VDISK_BYTES_FIELD(32, le)
VDISK_BYTES_FIELD(64, le)

#undef VDISK_BYTES_FIELD

#endif
