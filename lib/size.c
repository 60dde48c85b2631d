/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "vdisk/vdisk.h"
#include "error.h"
#include "size.h"

/* Multiplier for suffix C, 0 if C is not a suffix. */
static uint64_t suffix_unit(char c)
{
    const char *units = "BKMGTPE";
    const char *p = strchr(units, toupper((unsigned char)c));

    return (c && p) ? 1ull << (10 * (p - units)) : 0;
}

int vdisk_parse_size_unit(const char *text, uint64_t bare_unit, uint64_t *bytes)
{
    const char *p = text;
    uint64_t value = 0, unit;

    if (!text || !isdigit((unsigned char)*p))
        return vdisk_error(EINVAL,
                           "invalid size '%s': expected a number with an optional "
                           "K, M, G or T suffix",
                           text ? text : "");
    for (; isdigit((unsigned char)*p); p++) {
        if (value > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return vdisk_error(ERANGE, "size '%s' is too large", text);
        value = value * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '\0') {
        unit = bare_unit;
    } else {
        unit = suffix_unit(*p++);
        if (*p == 'i' && unit > 1)
            p++;
        if (*p == 'B' && unit > 1)
            p++;
        if (!unit || *p != '\0')
            return vdisk_error(EINVAL, "invalid size '%s': unknown suffix", text);
    }
    if (value > UINT64_MAX / unit)
        return vdisk_error(ERANGE, "size '%s' is too large", text);
    *bytes = value * unit;
    return 0;
}

int vdisk_parse_size(const char *text, uint64_t *bytes)
{
    return vdisk_parse_size_unit(text, 1ull << 20, bytes);
}
