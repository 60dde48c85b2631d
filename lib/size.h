/* SPDX-License-Identifier: MIT */
#ifndef VDISK_SIZE_H
#define VDISK_SIZE_H

#include <stdint.h>

/*
 * Parse a decimal number (a fraction if it makes whole bytes: 1.5G) with an
 * optional binary suffix (B, K, M, G, T, P, E, with optional "iB"); a bare
 * number is multiplied by BARE_UNIT. Hexadecimal and exponents are refused.
 * -EINVAL for junk, negatives and zero-length text; -ERANGE on overflow.
 */
int vdisk_parse_size_unit(const char *text, uint64_t bare_unit, uint64_t *bytes);

#endif
