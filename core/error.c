/* error.c: the per-thread error message behind efla_last_error(). */
#include "internal.h"
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];

const char *efla_last_error(void) { return last_error; }
void efla_clear_error(void) { last_error[0] = 0; }

static void set_message(const char *fmt, va_list ap) {
    vsnprintf(last_error, sizeof last_error, fmt, ap);
}

int efla_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    return -1;
}

void *efla_fail_null(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_message(fmt, ap);
    va_end(ap);
    return NULL;
}

void efla_error_prefix(const char *op) {
    char tmp[sizeof last_error];
    size_t n = strlen(op);
    if (strncmp(last_error, op, n) == 0 && last_error[n] == ':') return; /* already named */
    int n2 = snprintf(tmp, sizeof tmp, "%s: ", op);
    if (n2 > 0 && (size_t)n2 < sizeof tmp) snprintf(tmp + n2, sizeof tmp - (size_t)n2, "%.*s", (int)(sizeof tmp - (size_t)n2 - 1), last_error);
    memcpy(last_error, tmp, sizeof tmp);
}
