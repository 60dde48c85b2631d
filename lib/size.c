/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "vdisk/vdisk.h"
#include "error.h"
#include "size.h"

#define MAX_FRACTION_DIGITS 18 /* 10^18 fits in 64 bits */

/* Multiplier for suffix C, 0 if C is not a suffix. */
static uint64_t suffix_unit(char c)
{
    const char *units = "BKMGTPE";
    const char *p = strchr(units, toupper((unsigned char)c));

    return (c && p) ? 1ull << (10 * (p - units)) : 0;
}

/* Refuse TEXT, saying what a size looks like. */
static int bad_size(const char *text, const char *why, uint64_t bare_unit)
{
    return vdisk_error(EINVAL,
                       "invalid size '%s': %s; a size is a decimal number, fractions allowed "
                       "(1.5G), with an optional suffix B, K, M, G, T, P or E (powers of 1024, "
                       "KiB also accepted); a bare number means %s",
                       text, why,
                       bare_unit == 1            ? "bytes"
                       : bare_unit == 1ull << 20 ? "MiB"
                                                 : "units");
}

/*
 * Like qemu-img: an integer, an optional fraction, an optional suffix; the
 * result must be whole bytes (1.5K is 1536, 0.1K is refused). Hexadecimal,
 * exponents and signs are refused.
 */
int vdisk_parse_size_unit(const char *text, uint64_t bare_unit, uint64_t *bytes)
{
    const char *p = text;
    uint64_t value = 0, frac = 0, scale = 1, unit;
    unsigned __int128 total, part;

    if (!text || !*text)
        return bad_size(text ? text : "", "empty", bare_unit);
    if (*p == '-')
        return bad_size(text, "negative", bare_unit);
    if (!isdigit((unsigned char)*p) && *p != '.')
        return bad_size(text, "not a number", bare_unit);
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        return bad_size(text, "hexadecimal is not accepted", bare_unit);
    for (; isdigit((unsigned char)*p); p++) {
        if (value > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return vdisk_error(ERANGE, "size '%s' is too large", text);
        value = value * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return bad_size(text, "no digits after the decimal point", bare_unit);
        for (unsigned n = 0; isdigit((unsigned char)*p); p++, n++) {
            if (n >= MAX_FRACTION_DIGITS)
                return bad_size(text, "too many fraction digits", bare_unit);
            frac = frac * 10 + (uint64_t)(*p - '0');
            scale *= 10;
        }
    } else if (p == text) {
        return bad_size(text, "not a number", bare_unit);
    }
    if (*p == '\0') {
        unit = bare_unit;
    } else {
        if (*p == 'e' && isdigit((unsigned char)p[1]))
            return bad_size(text, "exponents are not accepted", bare_unit);
        unit = suffix_unit(*p++);
        if (*p == 'i' && unit > 1)
            p++;
        if (*p == 'B' && unit > 1)
            p++;
        if (!unit || *p != '\0')
            return bad_size(text, "unknown suffix", bare_unit);
    }
    part = (unsigned __int128)frac * unit;
    if (part % scale)
        return bad_size(text, "not a whole number of bytes", bare_unit);
    total = (unsigned __int128)value * unit + part / scale;
    if (total > UINT64_MAX)
        return vdisk_error(ERANGE, "size '%s' is too large", text);
    *bytes = (uint64_t)total;
    return 0;
}

int vdisk_parse_size(const char *text, uint64_t *bytes)
{
    return vdisk_parse_size_unit(text, 1ull << 20, bytes);
}
