/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vdisk/vdisk.h"
#include "error.h"

static _Thread_local char last_error[512];

/* Save the message; errno is restored first so that %m names ERR. */
int vdisk_error(int err, const char *fmt, ...)
{
    va_list ap;

    errno = err;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    return -err;
}

int vdisk_error_prefix(int err, const char *fmt, ...)
{
    char old[sizeof(last_error)];
    va_list ap;
    int n;

    memcpy(old, last_error, sizeof(old));
    errno = err;
    va_start(ap, fmt);
    n = vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(last_error))
        snprintf(last_error + n, sizeof(last_error) - (size_t)n, ": %s", old);
    return -err;
}

void vdisk_error_clear(void)
{
    last_error[0] = '\0';
}

const char *vdisk_last_error(void)
{
    return last_error;
}
